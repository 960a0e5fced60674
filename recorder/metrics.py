"""The tidy metrics.csv table: every population's metrics from summed confusion counts.

Built with numpy on a round's few hundred rows: the pandas group-by build it replaced cost
0.3 s a replicate-round, most of the server's work in a federation of many replicates. Its
float sums are pandas 3.1's own, bit for bit, so metrics.csv keeps its bytes: pandas sums a
group-by whose rows come in group order with numpy's `add.reduceat`, and any other with Kahan
summation in row order (its Cython kernels). `_group_sums` does the same, on rows in the order
the pandas build had them; tests/test_metrics_bytes.py holds this module to that build
(tests/pandas_metrics.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from core.counts import CELLS, count_metrics
from recorder.files import METRICS_COLUMNS

DEPLOYED = "deployed"  # the model whose metrics keep their plain names
GAPS = ("sp_gap", "eo_gap", "eodds_gap")  # count_metrics' order, the pandas build's row order
METRICS = tuple(sorted(("accuracy", "loss", *GAPS)))  # a metric's code: sorting codes sorts names
ACCURACY, LOSS = METRICS.index("accuracy"), METRICS.index("loss")
Rows = dict[str, np.ndarray]  # column name -> one value per row; keys and names as integer codes


def _group(keys: Sequence[np.ndarray], present: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(ids, first): each row's group numbered in sorted key order, as a sorted group-by numbers
    them (-1 for rows not `present`: a missing key, which group-bys drop), and a row of each group.
    Keys are non-negative integers (codes of names sorted by name, rounds, cluster ids)."""
    rows = len(keys[0])
    present = np.ones(rows, dtype=bool) if present is None else present
    combined = np.zeros(rows, dtype=np.int64)
    for key in keys:
        key = np.where(present, key, 0).astype(np.int64)
        combined = combined * (int(key.max(initial=0)) + 1) + key
    _, first, inverse = np.unique(combined[present], return_index=True, return_inverse=True)
    ids = np.full(rows, -1, dtype=np.int64)
    ids[present] = inverse
    return ids, np.flatnonzero(present)[first]


def _group_sums(values: np.ndarray, ids: np.ndarray, groups: int) -> tuple[np.ndarray, np.ndarray]:
    """(sum of the non-NaN values, their number) per group, computed as pandas' group-by sum and
    mean compute them: `add.reduceat` if the ids never decrease and no value is NaN, else Kahan
    summation of each group's values in row order."""
    kept = ids >= 0
    if np.all(ids[1:] >= ids[:-1]) and not np.isnan(values).any():
        ids, values = ids[kept], values[kept]
        sums, numbers = np.zeros(groups), np.zeros(groups, dtype=np.int64)
        if len(ids):
            starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
            sums[ids[starts]] = np.add.reduceat(values, starts)
            numbers[ids[starts]] = np.diff(starts, append=len(ids))
        return sums, numbers
    rows = np.flatnonzero(kept & ~np.isnan(values))
    rows = rows[np.argsort(ids[rows], kind="stable")]
    owner = ids[rows]
    numbers = np.bincount(owner, minlength=groups)
    rank = np.arange(len(rows)) - (np.cumsum(numbers) - numbers)[owner]  # place within its group
    by_rank = np.argsort(rank, kind="stable")
    bounds = np.searchsorted(rank[by_rank], np.arange(int(rank.max(initial=-1)) + 2))
    rows, owner = rows[by_rank], owner[by_rank]
    sums, compensation = np.zeros(groups), np.zeros(groups)
    for start, stop in zip(bounds[:-1], bounds[1:]):  # the groups' first values, then their second ...
        g = owner[start:stop]
        y = values[rows[start:stop]] - compensation[g]
        t = sums[g] + y
        c = (t - sums[g]) - y
        c[np.isnan(c)] = 0.0  # an infinite value: keep the sum infinite
        compensation[g] = c
        sums[g] = t
    return sums, numbers


def _mean(values: np.ndarray, ids: np.ndarray, groups: int) -> np.ndarray:
    """Mean of each group's non-NaN values (NaN for none)."""
    sums, numbers = _group_sums(values, ids, groups)
    with np.errstate(divide="ignore", invalid="ignore"):
        return sums / numbers


def _weighted_mean(values: np.ndarray, weights: np.ndarray, ids: np.ndarray, groups: int) -> np.ndarray:
    """Weighted mean per group skipping NaN values and missing weights, so one gap cannot void all."""
    valid = ~np.isnan(values) & ~np.isnan(weights)
    w = np.where(valid, weights, 0.0)
    total, _ = _group_sums(np.where(valid, values, 0.0) * w, ids, groups)
    weight, _ = _group_sums(w, ids, groups)
    with np.errstate(divide="ignore", invalid="ignore"):
        return total / weight


def _take(columns: Rows, rows: np.ndarray, by: Sequence[str]) -> Rows:
    return {name: columns[name][rows] for name in by}


def _population_rows(counts: Rows, clients: Rows, by: tuple[str, ...]) -> Rows:
    """Every metric of each population keyed by `by`, in the pandas build's row order: its accuracy,
    the gaps of each attribute (from summed counts), then the test-size-weighted mean client loss.
    Attribute code 0 is none (accuracy, loss), 1 + j the j-th attribute by name."""
    cluster_key = "cluster" in by
    ids, first = _group([counts[b] for b in (*by, "attribute")], ~np.isnan(counts["cluster"]) if cluster_key else None)
    kept = ids >= 0
    summed = np.zeros((len(first), 2, len(CELLS)), dtype=np.int64)
    np.add.at(summed, (ids[kept], counts["slot"][kept]), counts["cells"][kept])
    table = count_metrics(summed)
    population, heads = _group([counts[b][first] for b in by])
    # Every attribute partitions the same test set, so any one of them (the first defined) gives the accuracy.
    accuracy = np.full(len(heads), np.nan)
    defined = np.flatnonzero(~np.isnan(table["accuracy"]))
    found, at = np.unique(population[defined], return_index=True)
    accuracy[found] = table["accuracy"][defined[at]]

    loss_ids, loss_first = _group([clients[b] for b in by], ~np.isnan(clients["cluster"]) if cluster_key else None)
    loss = _weighted_mean(clients["loss"], clients["n"], loss_ids, len(loss_first))

    gap_rows = np.repeat(first, len(GAPS))
    parts = [
        (_take(counts, first[heads], by), 0, ACCURACY, accuracy),
        (_take(counts, gap_rows, by), counts["attribute"][gap_rows] + 1,
         np.tile([METRICS.index(gap) for gap in GAPS], len(first)), np.stack([table[g] for g in GAPS], axis=1).ravel()),
        (_take(clients, loss_first, by), 0, LOSS, loss),
    ]
    rows = {name: np.concatenate([keys[name] for keys, *_ in parts]) for name in by}
    for i, name in enumerate(("attribute", "metric", "value"), start=1):
        rows[name] = np.concatenate([np.broadcast_to(p[i], len(p[3])) for p in parts])
    return rows


def _first_of(keys: np.ndarray, values: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """For each of `wanted`, the value of the first row whose key equals it (NaN if none)."""
    unique, first = np.unique(keys, return_index=True)
    place = np.minimum(np.searchsorted(unique, wanted), max(len(unique) - 1, 0))
    found = unique[place] == wanted if len(unique) else np.zeros(len(wanted), dtype=bool)
    return np.where(found, values[first[place]] if len(unique) else np.nan, np.nan)


def _metric_name(model: str, metric: str, weighted: bool) -> str:
    """metrics.csv's name: prefixed by a model other than the deployed one, `_weighted` for MEAN's
    size-weighted means."""
    prefix = "" if model == DEPLOYED else f"{model}_"
    return f"{prefix}{metric}{'_weighted' if weighted else ''}"


def _columns(frame: pd.DataFrame, models: np.ndarray, states: np.ndarray) -> Rows:
    """The key columns as numbers: model and state as codes (sorted by name), a missing cluster as NaN."""
    return {
        "model": models, "round": frame["round"].to_numpy(np.int64), "state": states,
        "cluster": frame["cluster"].astype("Float64").to_numpy(np.float64, na_value=np.nan),
    }


def _slots(attribute: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Slot 0/1 per group name within each attribute, in order of appearance; gaps are symmetric,
    so the order is free."""
    slot = np.zeros(len(attribute), dtype=np.int64)
    for name in np.unique(attribute):
        rows = attribute == name
        _, first, inverse = np.unique(group[rows], return_index=True, return_inverse=True)
        slot[rows] = np.argsort(np.argsort(first))[inverse]
    if (slot > 1).any():
        raise ValueError("each attribute must have at most two groups")
    return slot


def metrics_frame(counts: pd.DataFrame, clients: pd.DataFrame) -> pd.DataFrame:
    """The tidy metrics.csv table: per state, pooled (ALL), client means (MEAN) and per cluster.

    Every pooled row sums counts and applies the same formula as a single client. Metrics of a
    model other than "deployed" are prefixed with its name (e.g. global_accuracy).
    """
    both = [counts, clients]
    model_names, models = np.unique(
        np.concatenate([f["model"].to_numpy(object) if "model" in f else np.full(len(f), DEPLOYED, object)
                        for f in both]), return_inverse=True)
    state_names, states = np.unique(np.concatenate([f["state"].to_numpy(object) for f in both]), return_inverse=True)
    split = len(counts)
    c = _columns(counts, models[:split], states[:split])
    k = _columns(clients, models[split:], states[split:])
    attributes, c["attribute"] = np.unique(counts["attribute"].to_numpy(object), return_inverse=True)
    c["slot"] = _slots(counts["attribute"].to_numpy(object), counts["group"].to_numpy(object))
    c["cells"] = counts[list(CELLS)].to_numpy(np.int64)
    k["n"] = clients["n"].to_numpy(np.float64)
    k["loss"] = clients["loss"].to_numpy(np.float64)

    per_state = _population_rows(c, k, ("model", "round", "state"))
    round_state = np.concatenate([c["round"], k["round"]]) * len(state_names) + states
    wanted = per_state["round"] * len(state_names) + per_state["state"]
    per_state["cluster"] = _first_of(round_state, np.concatenate([c["cluster"], k["cluster"]]), wanted)
    sizes = _first_of(round_state[split:], k["n"], wanted)

    ids, first = _group([per_state[name] for name in ("model", "round", "attribute", "metric")])
    means = {name: np.tile(per_state[name][first], 2) for name in ("model", "round", "attribute", "metric")}
    means["value"] = np.concatenate([_mean(per_state["value"], ids, len(first)),
                                     _weighted_mean(per_state["value"], sizes, ids, len(first))])
    means["weighted"] = np.repeat([0, 1], len(first))

    pooled = _population_rows(c, k, ("model", "round"))
    clusters = _population_rows(c, k, ("model", "round", "cluster"))
    cluster_ids = np.unique(np.concatenate([per_state["cluster"], clusters["cluster"]]))
    cluster_ids = cluster_ids[~np.isnan(cluster_ids)]

    # Row order: round, then the states as given, ALL, MEAN and the clusters, then attribute and metric.
    _, appearance = np.unique(states, return_index=True)
    given = np.argsort(np.argsort(appearance))  # a state code's place among the states as given
    n_states = len(state_names)
    parts = [  # (rows, state labels, place in the state order, cluster)
        (per_state, state_names[per_state["state"]], given[per_state["state"]], per_state["cluster"]),
        (pooled, "ALL", n_states, np.nan),
        (means, "MEAN", n_states + 1, np.nan),
        (clusters, np.array([f"cluster:{j:.0f}" for j in clusters["cluster"]], dtype=object),
         n_states + 2 + np.searchsorted(cluster_ids, clusters["cluster"]), clusters["cluster"]),
    ]
    column = {name: np.concatenate([p[0][name] for p in parts]) for name in ("model", "round", "attribute", "metric",
                                                                              "value")}
    weighted = np.concatenate([p[0].get("weighted", np.zeros(len(p[0]["value"]), dtype=np.int64)) for p in parts])
    state, place, cluster = (np.concatenate([np.broadcast_to(p[i], len(p[0]["value"])) for p in parts])
                             for i in (1, 2, 3))
    # Each distinct (model, metric, weighted) once: its name, and that name's place in name order.
    kinds, kind = np.unique((column["model"] * len(METRICS) + column["metric"]) * 2 + weighted, return_inverse=True)
    named = np.array([_metric_name(model_names[k // 2 // len(METRICS)], METRICS[k // 2 % len(METRICS)], k % 2 == 1)
                      for k in kinds], dtype=object)
    order = np.lexsort((np.argsort(np.argsort(named))[kind], column["attribute"], place, column["round"]))
    missing = np.isnan(cluster[order])
    frame = pd.DataFrame({
        "round": column["round"][order],
        "state": state[order],
        "cluster": pd.arrays.IntegerArray(np.where(missing, 0, cluster[order]).astype(np.int64), missing),
        "attribute": np.array(["", *attributes], dtype=object)[column["attribute"][order]],
        "metric": named[kind[order]],
        "value": column["value"][order],
    })
    return frame[METRICS_COLUMNS]
