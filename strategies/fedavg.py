"""FedAvg: every client trains the global model; the server averages, weighted by training examples."""

from __future__ import annotations

from collections.abc import Iterable

from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord
from flwr.serverapp import Grid

from strategies.aggregation import weighted_average
from strategies.base import FairnessStrategy
from strategies.messages import to_record


class FedAvgStrategy(FairnessStrategy):
    """McMahan et al.'s FedAvg with full participation and the shared fairness hook."""

    train_type = MessageType.TRAIN

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self.send(grid, server_round, self.train_type, {n: arrays for n in self.node_ids(grid)})

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """The weighted average of the usable updates; None (keep the model) when there are none."""
        updates = self.usable_updates(replies)
        if not updates:
            return None, None
        return to_record(weighted_average([u.params for u in updates], [u.weight for u in updates])), None
