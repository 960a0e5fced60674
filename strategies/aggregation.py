"""Weighted averaging of model parameters: the arithmetic of FedAvg and of per-cluster FedAvg."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from core.params import Params


def weighted_average(models: Sequence[Params], weights: Sequence[float]) -> Params:
    """Average parameter dicts key by key, weighted (e.g. by training examples).

    Accumulates in float64, model after model in the order given, so the result is the same
    bytes on every CPU (no BLAS or SIMD reduction decides the order), then rounds to the
    models' own dtype.
    """
    if not models:
        raise ValueError("weighted_average needs at least one model")
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (len(models),) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"weights must be {len(models)} non-negative numbers with a positive sum, got {weights!r}")
    w = w / w.sum()
    average = {}
    for key in models[0]:
        total = np.zeros(np.shape(models[0][key]))
        for weight, model in zip(w, models):
            total += weight * np.asarray(model[key], np.float64)
        average[key] = total.astype(models[0][key].dtype)
    return average
