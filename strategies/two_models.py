"""Strategies whose clients deploy a model of their own beside the global one (Per-FedAvg's
adapted model, Ditto's personal model): both are evaluated on the same splits, the deployed one
under the plain metric names and the global one under `global.` (the recorder's `global_*`), so
one run shows what personalization changed."""

from __future__ import annotations

from typing import Any

from flwr.app import MetricRecord

from clients.job import ClientJob, ClientReply
from clients.local import evaluate_local
from core.params import Params
from core.wire import EXAMPLES_KEY, Evaluation, evaluation_to_metrics, metrics_to_evaluation

GLOBAL_METRICS = "global."  # metric prefix of the global model's evaluation


def evaluate_both(job: ClientJob, deployed: Params, global_model: Params) -> ClientReply:
    """The deployed and the global model on the test split (and validation, when it has records)."""
    metrics: dict[str, Any] = {EXAMPLES_KEY: len(job.data.test)}
    for prefix, split in job.evaluation_splits():
        metrics.update(evaluation_to_metrics(evaluate_local(deployed, split, job.index), prefix))
        metrics.update(evaluation_to_metrics(evaluate_local(global_model, split, job.index), prefix + GLOBAL_METRICS))
    return ClientReply(metrics)


def read_both(metrics: MetricRecord, prefix: str = "") -> dict[str, Evaluation]:
    """The two evaluations of an `evaluate_both` reply, by model."""
    return {"deployed": metrics_to_evaluation(metrics, prefix),
            "global": metrics_to_evaluation(metrics, prefix + GLOBAL_METRICS)}
