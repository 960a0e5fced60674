"""Model parameters as both sides hold them: a dict of float32 numpy arrays, and its Flower record.

Parameters travel as plain numpy so that Flower, the strategies and the trainers share one
representation; `core/torch_model.py` is the reference that fixes their layout and init.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord

Params = dict[str, np.ndarray]

PARAM_KEYS = ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")


def copy_params(params: Params) -> Params:
    """Deep float32 copy, so callers never share buffers with a trainer."""
    return {k: np.array(params[k], dtype=np.float32, copy=True) for k in PARAM_KEYS}


def to_record(params: Params, prefix: str = "") -> ArrayRecord:
    """Parameters as an ArrayRecord; `prefix` namespaces several models in one record."""
    return ArrayRecord({f"{prefix}{k}": Array(np.ascontiguousarray(v)) for k, v in params.items()})


def from_record(record: ArrayRecord, prefix: str = "") -> Params:
    """The parameters stored under `prefix` (all of them when prefix is empty)."""
    return {k[len(prefix):]: v.numpy() for k, v in record.items() if k.startswith(prefix)}
