"""recorder/metrics.py (numpy) writes metrics.csv byte for byte as the pandas group-by build it
replaced (tests/pandas_metrics.py), on made-up rounds shaped like the recorder's: clusters with
gaps in their ids and clients without one, a second model (`global_` metrics), empty groups and
groups without positives (NaN gaps), NaN losses, several rounds, rows in any order."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.tasks import ATTRIBUTES
from recorder.files import COUNTS_COLUMNS
from recorder.metrics import _group_sums, metrics_frame
from tests import pandas_metrics

STATES = ("CA", "AL", "WY", "TX", "NY", "AK", "DC", "PR", "CA/2", "AL/2")


def made_up_round_tables(seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(counts, clients) as Recorder.split_tables builds them, with a seeded mix of the odd cases."""
    rng = np.random.default_rng(seed)
    models = ("deployed", "global")[: int(rng.integers(1, 3))]
    states = list(rng.permutation(STATES)[: int(rng.integers(1, len(STATES) + 1))])
    clustering = rng.choice(["none", "all", "some"])
    count_rows, client_rows = [], []
    for round_ in rng.permutation(np.arange(1, int(rng.integers(2, 4)) + 1)).tolist():
        for model in models:
            for state in states:
                cluster = pd.NA if clustering == "none" or (clustering == "some" and rng.random() < 0.3) else int(
                    rng.choice([0, 2, 5]))
                n = int(rng.integers(1, 400))
                loss = float(np.nan) if rng.random() < 0.1 else float(10.0 ** rng.uniform(-4, 9))
                client_rows.append({"round": round_, "state": state, "cluster": cluster, "n": n, "loss": loss,
                                    "model": model})
                for attribute, names in ATTRIBUTES.items():
                    for name in names:
                        cells = rng.integers(0, 60, 4) * (rng.random(4) > 0.15)
                        if rng.random() < 0.1:
                            cells[:] = 0  # an empty group: NaN gaps
                        count_rows.append({"round": round_, "state": state, "cluster": cluster,
                                           "attribute": attribute, "group": name, "n": int(cells.sum()),
                                           **dict(zip(("tp", "fp", "tn", "fn"), cells.tolist())), "model": model})
    counts = pd.DataFrame(count_rows, columns=[*COUNTS_COLUMNS, "model"])
    clients = pd.DataFrame(client_rows, columns=["round", "state", "cluster", "n", "loss", "model"])
    if rng.random() < 0.3:
        counts, clients = counts.sample(frac=1, random_state=seed), clients.sample(frac=1, random_state=seed)
    if len(models) == 1 and rng.random() < 0.5:
        counts, clients = counts.drop(columns="model"), clients.drop(columns="model")
    for frame in (counts, clients):
        frame["cluster"] = frame["cluster"].astype("Int64")
    return counts.reset_index(drop=True), clients.reset_index(drop=True)


def csv_bytes(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False, lineterminator="\n").encode()


@pytest.mark.parametrize("seed", range(40))
def test_metrics_csv_bytes_equal_the_pandas_build(seed: int) -> None:
    counts, clients = made_up_round_tables(seed)
    assert csv_bytes(metrics_frame(counts, clients)) == csv_bytes(pandas_metrics.metrics_frame(counts, clients))


@pytest.mark.parametrize("sort", [True, False])
def test_group_sums_equal_pandas_group_by_sum_and_mean_bit_for_bit(sort: bool) -> None:
    """Values spanning 12 orders of magnitude, where the summation order shows in the last bits."""
    rng = np.random.default_rng(3)
    for _ in range(50):
        ids = rng.integers(0, 4, 40)
        ids = np.sort(ids) if sort else ids
        values = rng.normal(size=40) * 10.0 ** rng.integers(-3, 9, 40)
        grouped = pd.Series(values).groupby(ids)
        sums, numbers = _group_sums(values, np.unique(ids, return_inverse=True)[1], len(np.unique(ids)))
        assert sums.tolist() == grouped.sum().tolist()
        assert (sums / numbers).tolist() == grouped.mean().tolist()


def test_three_groups_in_an_attribute_are_refused() -> None:
    counts, clients = made_up_round_tables(0)
    counts.loc[0, "group"] = "third"
    with pytest.raises(ValueError, match="at most two groups"):
        metrics_frame(counts, clients)
