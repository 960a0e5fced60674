"""Statistics of a study as plain functions on arrays: tests across states, cluster agreement,
convergence and the accuracy-fairness frontier.

Seeds give the uncertainty of one configuration (bootstrap over seeds, `analysis.report.bootstrap_ci`);
states are the units of the tests across states, so a result has to hold in many states, not in one
lucky seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.stats import wilcoxon

PLATEAU_TOL = 1e-3  # relative loss improvement below which training counts as having stopped improving


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values in input order; NaN stays NaN and is not counted as a test.

    Step-down: the i-th smallest of m p-values is multiplied by (m - i + 1), made monotone and capped
    at 1. (scipy's false_discovery_control does Benjamini-Hochberg, a different, weaker correction.)
    """
    p = np.asarray(pvalues, dtype=np.float64)
    adjusted = np.full(p.shape, np.nan)
    tested = np.flatnonzero(np.isfinite(p))
    order = tested[np.argsort(p[tested], kind="stable")]
    factors = len(order) - np.arange(len(order))
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate(factors * p[order]))
    return adjusted


def signed_rank_test(deltas: Sequence[float]) -> tuple[float, float, int]:
    """(W, two-sided p, n) of scipy's Wilcoxon signed-rank test on the finite, non-zero deltas.

    Zero deltas carry no sign, so they are dropped before the test (zero_method="wilcox"), and n counts
    the rest; with none left the test is undefined (NaN, NaN, 0).
    """
    x = np.asarray(deltas, dtype=np.float64)
    x = x[np.isfinite(x) & (x != 0)]
    if x.size == 0:
        return math.nan, math.nan, 0
    result = wilcoxon(x, zero_method="wilcox", alternative="two-sided")
    return float(result.statistic), float(result.pvalue), int(x.size)


def _pairs(counts: np.ndarray) -> int:
    counts = counts.astype(np.int64)
    return int((counts * (counts - 1) // 2).sum())


def adjusted_rand_index(a: Sequence[object], b: Sequence[object]) -> float:
    """Adjusted Rand index of two labelings of the same items (Hubert and Arabie), from their
    contingency table: 1 for the same partition up to label names, about 0 for independent ones.

    Two partitions that are both trivial (one block, or all singletons) agree perfectly: 1.0, as in
    scikit-learn.
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"labelings must be 1-d and of equal length, got {a.shape} and {b.shape}")
    _, rows = np.unique(a, return_inverse=True)
    _, columns = np.unique(b, return_inverse=True)
    table = np.zeros((rows.max(initial=-1) + 1, columns.max(initial=-1) + 1), dtype=np.int64)
    np.add.at(table, (rows, columns), 1)
    together = _pairs(table)
    in_a, in_b, total = _pairs(table.sum(axis=1)), _pairs(table.sum(axis=0)), _pairs(np.array([a.size]))
    expected = in_a * in_b / total if total else 0.0
    best = (in_a + in_b) / 2
    if best == expected:
        return 1.0
    return float((together - expected) / (best - expected))


def plateau_round(rounds: Sequence[int], losses: Sequence[float], tol: float = PLATEAU_TOL) -> int:
    """The first round r after which the loss never again falls more than `tol` (relative) below the
    best loss reached by r. If r is the last round, the loss was still improving when training stopped.

    Rounds with a NaN loss never improve. Relative to the best so far, not to the previous round, so a
    slow drift of many small steps still counts once it adds up to `tol`.
    """
    rounds = list(rounds)
    x = np.asarray(losses, dtype=np.float64)
    if not rounds or len(rounds) != x.size:
        raise ValueError(f"need one loss per round, got {len(rounds)} rounds and {x.size} losses")
    x = np.where(np.isfinite(x), x, np.inf)
    best = np.minimum.accumulate(x)
    later = np.append(np.minimum.accumulate(x[::-1])[::-1][1:], np.inf)  # min over rounds after r
    with np.errstate(invalid="ignore"):
        improves = np.where(np.isfinite(best), later < best - tol * np.abs(best), np.isfinite(later))
    return int(rounds[int(np.argmax(~improves))])


def chosen_round(rounds: Sequence[int], losses: Sequence[float]) -> int | None:
    """The round of the lowest finite loss, the earliest on ties; None if no loss is finite."""
    x = np.asarray(losses, dtype=np.float64)
    if not np.isfinite(x).any():
        return None
    return int(list(rounds)[int(np.nanargmin(np.where(np.isfinite(x), x, np.nan)))])


def pareto_front(accuracy: Sequence[float], gap: Sequence[float]) -> np.ndarray:
    """True for the points no other point dominates (accuracy at least as high and gap at least as
    small, one of them strictly); a point with a NaN coordinate is never on the front."""
    acc, g = np.asarray(accuracy, dtype=np.float64), np.asarray(gap, dtype=np.float64)
    ok = np.isfinite(acc) & np.isfinite(g)
    front = ok.copy()
    for i in np.flatnonzero(ok):
        others = ok & (acc >= acc[i]) & (g <= g[i]) & ((acc > acc[i]) | (g < g[i]))
        front[i] = not others.any()
    return front


def churn(previous: dict[str, int], current: dict[str, int]) -> float:
    """Fraction of the clients present in both rounds whose cluster changed (NaN if none is)."""
    shared = [c for c in current if c in previous]
    if not shared:
        return math.nan
    return sum(previous[c] != current[c] for c in shared) / len(shared)
