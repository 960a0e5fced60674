"""Weighted averaging of model parameters: the arithmetic of FedAvg and of per-cluster FedAvg."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from core.params import Params


def weighted_average(models: Sequence[Params], weights: Sequence[float]) -> Params:
    """Average parameter dicts key by key, weighted (e.g. by training examples).

    Accumulates in float64 so the result does not depend on summation order beyond rounding
    to the models' own dtype at the end.
    """
    if not models:
        raise ValueError("weighted_average needs at least one model")
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (len(models),) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"weights must be {len(models)} non-negative numbers with a positive sum, got {weights!r}")
    w = w / w.sum()
    return {
        key: np.einsum("i,i...->...", w, np.stack([m[key] for m in models]).astype(np.float64)).astype(
            models[0][key].dtype
        )
        for key in models[0]
    }
