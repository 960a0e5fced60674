"""Client evaluations as the tidy tables of the results contract (counts.csv and per-client rows)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from core.tasks import ATTRIBUTES
from core.wire import Evaluation
from recorder.files import COUNTS_COLUMNS, METRICS_COLUMNS

COUNT_FIELDS = ("tp", "fp", "tn", "fn")


def evaluation_tables(
    server_round: int,
    evaluations: Sequence[Evaluation],
    clients: Sequence[str],
    clusters: Mapping[int, int] | None = None,
    model: str = "deployed",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(counts rows, per-client rows) for one round; `clients` are the client labels (the `state`
    column) and `clusters` maps client index to cluster id."""
    clusters = clusters or {}
    evaluations = sorted(evaluations, key=lambda e: e.client_index)
    states = np.array([clients[ev.client_index] for ev in evaluations], dtype=object)
    cluster = pd.array([clusters.get(ev.client_index, pd.NA) for ev in evaluations], dtype="Int64")
    groups = [(attribute, g, name) for attribute, names in ATTRIBUTES.items() for g, name in enumerate(names)]
    cells = np.array([[ev.counts[attribute][g] for attribute, g, _ in groups] for ev in evaluations],
                     dtype=np.int64).reshape(-1, len(COUNT_FIELDS))
    per_client = len(groups)
    counts = pd.DataFrame({
        "round": np.full(len(cells), server_round, dtype=np.int64),
        "state": np.repeat(states, per_client),
        "cluster": cluster.take(np.repeat(np.arange(len(evaluations)), per_client)),
        "attribute": np.tile(np.array([a for a, _, _ in groups], dtype=object), len(evaluations)),
        "group": np.tile(np.array([name for _, _, name in groups], dtype=object), len(evaluations)),
        "n": cells.sum(axis=1),
        **{field: cells[:, i] for i, field in enumerate(COUNT_FIELDS)},
        "model": np.full(len(cells), model, dtype=object),
    }, columns=[*COUNTS_COLUMNS, "model"])
    clients_frame = pd.DataFrame({
        "round": np.full(len(evaluations), server_round, dtype=np.int64),
        "state": states,
        "cluster": cluster,
        "n": np.array([ev.n for ev in evaluations], dtype=np.int64),
        "loss": np.array([ev.loss for ev in evaluations], dtype=np.float64),
        "model": np.full(len(evaluations), model, dtype=object),
    })
    return counts, clients_frame


def health_rows(server_round: int, counts: Mapping[str, int]) -> pd.DataFrame:
    """metrics.csv rows (state ALL) counting a round's failed clients, rejected updates and the like."""
    rows = [
        {"round": server_round, "state": "ALL", "cluster": pd.NA, "attribute": "", "metric": name, "value": float(n)}
        for name, n in counts.items()
    ]
    frame = pd.DataFrame(rows, columns=METRICS_COLUMNS)
    frame["cluster"] = frame["cluster"].astype("Int64")
    return frame


def pooled_loss(metrics: pd.DataFrame) -> tuple[list[int], list[float]]:
    """(rounds, pooled loss) from a metrics table's state-ALL loss rows, by round: the quantity the
    analysis chooses a round on (validation) and the early stop watches (recorder.py)."""
    rows = metrics[(metrics["state"] == "ALL") & (metrics["attribute"] == "") & (metrics["metric"] == "loss")]
    rows = rows.sort_values("round")
    return rows["round"].tolist(), rows["value"].tolist()
