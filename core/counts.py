"""Per-group confusion counts and the metrics derived from them: one formula for every level.

Clients report only counts, so every level (client, cluster, all states pooled) is computed
by the same function on summed counts; the levels cannot disagree and no predictions leave a
client.
"""

from __future__ import annotations

import numpy as np

CELLS = ("tp", "fp", "tn", "fn")


def _binary(values: np.ndarray, name: str) -> np.ndarray:
    """Reject anything but 0/1 so that probabilities or multi-class codes cannot pass silently."""
    array = np.asarray(values)
    if not np.isin(array, (0, 1)).all():
        raise ValueError(f"{name} must contain only 0/1 (or False/True)")
    return array.astype(np.int64)


def confusion_counts(y_true: np.ndarray, y_pred: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Counts [tp, fp, tn, fn] for group 0 (row 0) and group 1 (row 1), as int64."""
    t, p, g = _binary(y_true, "y_true"), _binary(y_pred, "y_pred"), _binary(group, "group")
    cell = np.array([2, 1, 3, 0])[2 * t + p]  # (t, p): (0,0)->tn, (0,1)->fp, (1,0)->fn, (1,1)->tp
    return np.bincount(4 * g + cell, minlength=8).reshape(2, 4).astype(np.int64)


def count_metrics(counts: np.ndarray) -> dict[str, np.ndarray]:
    """Metrics of populations given as (..., 2, 4) counts; empty denominators give NaN."""
    tp, fp, tn, fn = np.moveaxis(np.asarray(counts, dtype=np.float64), -1, 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        accuracy = (tp + tn).sum(-1) / (tp + fp + tn + fn).sum(-1)
        selection = (tp + fp) / (tp + fp + tn + fn)
        tpr = tp / (tp + fn)
        fpr = fp / (fp + tn)
    eo_gap = np.abs(tpr[..., 0] - tpr[..., 1])
    return {
        "accuracy": accuracy,
        "sp_gap": np.abs(selection[..., 0] - selection[..., 1]),
        "eo_gap": eo_gap,
        "eodds_gap": np.maximum(eo_gap, np.abs(fpr[..., 0] - fpr[..., 1])),  # NaN propagates
    }


def population_metrics(counts: np.ndarray) -> dict[str, float]:
    """Accuracy and the three gaps of one population from its (2, 4) counts; NaN where undefined."""
    counts = np.asarray(counts)
    if counts.shape != (2, 4):
        raise ValueError(f"counts must have shape (2, 4), got {counts.shape}")
    return {name: float(value) for name, value in count_metrics(counts).items()}
