"""What crosses the wire besides parameters: metric keys, message config keys, evaluations.

Both halves of every strategy use these names, so a reply the server reads is exactly what a
client wrote. Every reply names its client (`CLIENT_KEY`): node ids are random and change
when a node restarts, so the server maps nodes to clients from the replies.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from flwr.app import MetricRecord

from core.tasks import ATTRIBUTES

CLIENT_KEY = "client-index"  # the client a reply comes from (index into the run's clients)
EXAMPLES_KEY = "num-examples"  # training examples behind an update: its averaging weight
TRAIN_LOSS_KEY = "train-loss"
ROUND_KEY = "server-round"  # message config: the round, and the resolved data source below
SOURCE_KEYS = ("source-kind", "source-path", "states")
IDENTIFY = "query.identify"  # asks a node which client it serves (and its split sizes)
SIZES_KEY = "split-sizes"  # identify reply: records in the client's train, test, val splits
VAL_PREFIX = "val."  # evaluation metrics of the validation split carry this prefix
VAL_TAG = "val:"  # model tags of validation evaluations (recorder: val_*.csv)


def train_type(name: str = "") -> str:
    """Flower's message type for a strategy's training ("train" for plain FedAvg training)."""
    return f"train.{name}" if name else "train"


def evaluate_type(name: str = "") -> str:
    return f"evaluate.{name}" if name else "evaluate"


@dataclass(frozen=True)
class Evaluation:
    """One client's evaluation of one model on one split: size, mean loss, per-group counts."""

    client_index: int
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
        client_index=int(metrics[CLIENT_KEY]),
        n=int(metrics[f"{prefix}n"]),
        loss=float(metrics[f"{prefix}loss"]),
        counts={
            a: np.asarray(metrics[f"{prefix}counts.{a}"], dtype=np.int64).reshape(2, 4) for a in ATTRIBUTES
        },
    )
