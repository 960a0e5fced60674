"""Per-FedAvg: FedAvg over locally meta-trained models; each client deploys its adapted copy.

The server side is FedAvg's weighted average. What differs happens on the clients (see
clients/personalization.py): local training is MAML-style meta-training, and evaluation
reports both the adapted model (deployed) and the unadapted global model, so the effect of
personalization on accuracy and fairness is visible within one run.
"""

from __future__ import annotations

from flwr.app import MetricRecord

from strategies.fedavg import FedAvgStrategy
from strategies.messages import Evaluation, metrics_to_evaluation

PERFEDAVG_TRAIN = "train.perfedavg"
PERFEDAVG_EVALUATE = "evaluate.perfedavg"
GLOBAL_PREFIX = "global."


class PerFedAvgStrategy(FedAvgStrategy):
    """FedAvg aggregation of meta-models; evaluation of adapted and global models."""

    train_type = PERFEDAVG_TRAIN
    evaluate_type = PERFEDAVG_EVALUATE

    def read_evaluation(self, metrics: MetricRecord) -> dict[str, Evaluation]:
        return {"deployed": metrics_to_evaluation(metrics), "global": metrics_to_evaluation(metrics, GLOBAL_PREFIX)}
