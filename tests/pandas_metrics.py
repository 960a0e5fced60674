"""The pandas group-by build of metrics.csv that recorder/metrics.py replaced: the reference its
numpy version must equal byte for byte (tests/test_metrics_bytes.py).

recorder/metrics.py takes a few milliseconds where this took 0.3 s a replicate-round, which was
most of the server's work per replicate in a federation of many."""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.counts import CELLS, count_metrics
from recorder.files import METRICS_COLUMNS

DEPLOYED = "deployed"  # the model whose metrics keep their plain names


def _weighted_mean(values: pd.Series, weights: pd.Series, keys: list[pd.Series]) -> pd.Series:
    """Weighted mean per key skipping NaN values and missing weights, so one gap cannot void all."""
    valid = values.notna() & weights.notna()
    w = weights.where(valid, 0.0).astype(np.float64)
    total = (values.where(valid, 0.0) * w).groupby(keys).sum()
    return total / w.groupby(keys).sum()


def _count_metrics(counts: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Long-form metrics of each population keyed by `by`, pooled by summing its counts."""
    summed = counts.groupby([*by, "attribute", "slot"])[list(CELLS)].sum()
    wide = summed.unstack("slot", fill_value=0)
    wide = wide.reindex(columns=pd.MultiIndex.from_product([CELLS, (0, 1)]), fill_value=0)
    array = wide.to_numpy(dtype=np.int64).reshape(-1, 4, 2).swapaxes(1, 2)
    table = pd.DataFrame(count_metrics(array), index=wide.index)
    # Every attribute partitions the same test set, so any one of them gives the accuracy.
    accuracy = table["accuracy"].groupby(level=by).first().rename("value").reset_index()
    gaps = table.drop(columns="accuracy").rename_axis(columns="metric").stack().rename("value")
    return pd.concat(
        [accuracy.assign(attribute="", metric="accuracy"), gaps.reset_index()], ignore_index=True
    )


def _loss(clients: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Test-size-weighted mean client loss of each population keyed by `by`."""
    keys = [clients[column] for column in by]
    loss = _weighted_mean(clients["loss"], clients["n"], keys).rename("value").reset_index()
    return loss.assign(attribute="", metric="loss")


def _population_rows(counts: pd.DataFrame, clients: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Every metric of each population keyed by `by`: accuracy and gaps from counts, loss."""
    return pd.concat([_count_metrics(counts, by), _loss(clients, by)], ignore_index=True)


def _prepare(frame: pd.DataFrame) -> pd.DataFrame:
    """Copy with a model column (deployed if absent) and nullable-integer cluster ids."""
    frame = frame.copy()
    if "model" not in frame:
        frame["model"] = DEPLOYED
    frame["cluster"] = frame["cluster"].astype("Int64")
    return frame


def metrics_frame(counts: pd.DataFrame, clients: pd.DataFrame) -> pd.DataFrame:
    """The tidy metrics.csv table: per state, pooled (ALL), client means (MEAN) and per cluster.

    Every pooled row sums counts and applies the same formula as a single client. Metrics of a
    model other than "deployed" are prefixed with its name (e.g. global_accuracy).
    """
    counts, clients = _prepare(counts), _prepare(clients)
    # Slot 0/1 per group name within each attribute; gaps are symmetric, so the order is free.
    counts["slot"] = counts.groupby("attribute", sort=False)["group"].transform(
        lambda names: pd.factorize(names)[0]
    )
    if (counts["slot"] > 1).any():
        raise ValueError("each attribute must have at most two groups")

    per_state = _population_rows(counts, clients, ["model", "round", "state"])
    membership = pd.concat([counts, clients])[["round", "state", "cluster"]]
    membership = membership.drop_duplicates(["round", "state"])
    per_state = per_state.merge(membership, on=["round", "state"], how="left")

    pooled = _population_rows(counts, clients, ["model", "round"]).assign(state="ALL")

    sizes = clients.drop_duplicates(["round", "state"])[["round", "state", "n"]]
    weighted = per_state.merge(sizes, on=["round", "state"], how="left")
    keys = [weighted[column] for column in ("model", "round", "attribute", "metric")]
    plain = weighted["value"].groupby(keys).mean()
    by_size = _weighted_mean(weighted["value"], weighted["n"], keys).rename("value")
    by_size = by_size.reset_index().assign(metric=lambda f: f["metric"] + "_weighted")
    means = pd.concat([plain.reset_index(), by_size]).assign(state="MEAN")

    clusters = _population_rows(counts, clients, ["model", "round", "cluster"])
    clusters["state"] = "cluster:" + clusters["cluster"].astype(str)

    rows = pd.concat([per_state, pooled, means, clusters], ignore_index=True)
    prefixed = rows["model"] + "_" + rows["metric"]
    rows["metric"] = rows["metric"].where(rows["model"] == DEPLOYED, prefixed)
    rows["cluster"] = rows["cluster"].astype("Int64")

    states = pd.unique(pd.concat([counts["state"], clients["state"]]))
    cluster_ids = np.sort(rows["cluster"].dropna().unique())
    order = [*states, "ALL", "MEAN", *(f"cluster:{j}" for j in cluster_ids)]
    rows["state"] = pd.Categorical(rows["state"], categories=order, ordered=True)
    rows = rows.sort_values(["round", "state", "attribute", "metric"], ignore_index=True)
    rows["state"] = rows["state"].astype(str)
    return rows[METRICS_COLUMNS]
