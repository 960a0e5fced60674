"""What a round produced, as a value: the strategies return it and the recorder writes it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.wire import Evaluation


@dataclass
class RoundHealth:
    """What went wrong in one round; written to metrics.csv as `ALL` rows."""

    failed_clients: int = 0  # training replies that were errors or never came
    rejected_updates: int = 0  # training replies whose update could not be used
    failed_evaluations: int = 0  # evaluation replies that were errors, unreadable or never came
    model_kept: bool = False  # nobody returned a usable update: the previous model stays

    def counts(self) -> dict[str, int]:
        return {
            "failed_clients": self.failed_clients,
            "rejected_updates": self.rejected_updates,
            "failed_evaluations": self.failed_evaluations,
        }


@dataclass
class RoundResult:
    """One completed round: every usable evaluation per model tag, the clusters, the failures.

    `evaluations` holds one dict per evaluated client (model tag -> Evaluation), sorted by
    client; `clusters` maps client index to the cluster whose model it deployed;
    `cluster_choices` are the clusters.csv rows of clients that chose a cluster this round.
    """

    server_round: int
    evaluations: list[dict[str, Evaluation]] = field(default_factory=list)
    clusters: dict[int, int] = field(default_factory=dict)
    cluster_choices: list[dict[str, Any]] | None = None
    health: RoundHealth = field(default_factory=RoundHealth)
