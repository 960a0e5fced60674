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
    refused_nodes: int = 0  # nodes whose claimed client was refused (node-states, or a client already served)
    model_kept: bool = False  # fewer than `quorum` usable updates: the previous model stays
    quorum: int = 1  # usable updates a round needs to change the model (`min-clients`)
    trained: tuple[int, ...] = ()  # the clients whose training update was usable

    def counts(self) -> dict[str, int]:
        """metrics.csv's ALL rows; `refused_nodes` only in a round that refused a node, so runs
        without identity trouble keep their files unchanged."""
        out = {
            "failed_clients": self.failed_clients,
            "rejected_updates": self.rejected_updates,
            "failed_evaluations": self.failed_evaluations,
        }
        if self.refused_nodes:
            out["refused_nodes"] = self.refused_nodes
        return out


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
