"""What crosses the wire: model parameters as ArrayRecords and client evaluations as MetricRecords."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from flwr.app import Array, ArrayRecord, MetricRecord

from clients.tasks import ATTRIBUTES

Params = dict[str, np.ndarray]


def to_record(params: Params, prefix: str = "") -> ArrayRecord:
    """Parameters as an ArrayRecord; `prefix` namespaces several models in one record."""
    return ArrayRecord({f"{prefix}{k}": Array(np.ascontiguousarray(v)) for k, v in params.items()})


def from_record(record: ArrayRecord, prefix: str = "") -> Params:
    """The parameters stored under `prefix` (all of them when prefix is empty)."""
    return {k[len(prefix):]: v.numpy() for k, v in record.items() if k.startswith(prefix)}


@dataclass(frozen=True)
class Evaluation:
    """One client's test-split evaluation: size, mean loss and per-group confusion counts."""

    state_index: int
    n: int
    loss: float
    counts: dict[str, np.ndarray]  # attribute -> (2, 4) array of [tp, fp, tn, fn] per group


def evaluation_to_metrics(ev: Evaluation, prefix: str = "") -> dict[str, float | int | list[int]]:
    """MetricRecord entries for one evaluation; `prefix` distinguishes several models' results."""
    out: dict[str, float | int | list[int]] = {
        f"{prefix}loss": float(ev.loss),
        f"{prefix}n": int(ev.n),
    }
    for attribute in ATTRIBUTES:
        out[f"{prefix}counts.{attribute}"] = [int(c) for c in ev.counts[attribute].ravel()]
    return out


def metrics_to_evaluation(metrics: MetricRecord, prefix: str = "") -> Evaluation:
    return Evaluation(
        state_index=int(metrics["state-index"]),
        n=int(metrics[f"{prefix}n"]),
        loss=float(metrics[f"{prefix}loss"]),
        counts={
            a: np.asarray(metrics[f"{prefix}counts.{a}"], dtype=np.int64).reshape(2, 4) for a in ATTRIBUTES
        },
    )
