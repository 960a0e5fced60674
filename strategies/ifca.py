"""IFCA clustered FL (Ghosh et al. 2020) and its fairness-aware cluster choice (Fair-FCA).

k cluster models live on the server. Every round each client scores all k on its own
training data, joins the best, trains that one model and returns it; the server averages
each cluster's updates separately. With `lambda > 0` the score adds the client's fairness
gap under each model (Fair-FCA); with `lambda = 0` the rule is IFCA's argmin of loss, bit
for bit.

What goes over the wire: for training every client receives all k models, because IFCA's
cluster choice is made by the client on its own data and needs every candidate; shipping
only "its" cluster would freeze the first assignment. For evaluation a client deploys the
model of the cluster it last joined: it receives all k models and every client's cluster and
picks its own, so the server needs no node-to-state mapping (node ids change when a run is
resumed, and a client that failed this round's training keeps its previous cluster). One income model is about 13 kB, so k
models per client per round cost little next to local training.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord
from flwr.serverapp import Grid

from clients.model import init_params
from clients.tasks import TASKS
from strategies.aggregation import Params, weighted_average
from strategies.base import FairnessStrategy, RunContext
from strategies.checkpoint import Checkpoint
from strategies.messages import from_record, to_record
from strategies.replies import Update

IFCA_TRAIN = "train.ifca"
IFCA_EVALUATE = "evaluate.ifca"


def cluster_prefix(j: int) -> str:
    return f"c{j}."


def choose_cluster(losses: np.ndarray, gaps: np.ndarray | None = None, lam: float = 0.0) -> int:
    """Index of the cluster minimising loss + lambda * gap (first index on ties).

    A NaN gap (a group absent from the client's data) adds nothing; lambda = 0 ignores gaps
    entirely, so the choice is exactly IFCA's.
    """
    losses = np.asarray(losses, dtype=np.float64)
    if lam == 0.0 or gaps is None:
        return int(np.argmin(losses))
    return int(np.argmin(losses + lam * np.nan_to_num(np.asarray(gaps, dtype=np.float64), nan=0.0)))


def aggregate_clusters(
    previous: Sequence[Params], updates: Sequence[Params], weights: Sequence[float], assignments: Sequence[int]
) -> list[Params]:
    """New cluster models: each cluster averages its members' updates; an empty one keeps its model."""
    out = list(previous)
    for j in range(len(previous)):
        members = [i for i, c in enumerate(assignments) if c == j]
        if members:
            out[j] = weighted_average([updates[i] for i in members], [weights[i] for i in members])
    return out


def initial_cluster_models(width: int, hidden: int, seed: int, k: int) -> list[Params]:
    """k independently seeded models (cluster j uses a seed derived from (seed, j))."""
    return [init_params(width, hidden, int(np.random.SeedSequence([seed, j]).generate_state(1)[0])) for j in range(k)]


def perturbed_copies(model: Params, k: int, seed: int, scale: float = 0.01) -> list[Params]:
    """k copies of a warm-start model with small seeded noise, so the clusters can separate."""
    out = []
    for j in range(k):
        rng = np.random.default_rng([seed, j, 7])
        out.append({key: (v + rng.normal(0.0, scale, v.shape)).astype(v.dtype) for key, v in model.items()})
    return out


def models_record(models: Sequence[Params]) -> ArrayRecord:
    record = ArrayRecord()
    for j, model in enumerate(models):
        for key, array in to_record(model, cluster_prefix(j)).items():
            record[key] = array
    return record


def cluster_reply_problem(metrics: MetricRecord, k: int) -> str | None:
    """Why an IFCA training reply's cluster choice cannot be used; None if it can."""
    try:
        cluster, losses = metrics["cluster"], metrics["losses"]
    except KeyError as err:
        return f"missing metric {err}"
    if isinstance(cluster, bool) or not isinstance(cluster, int) or not 0 <= cluster < k:
        return f"cluster {cluster!r} is not one of 0..{k - 1}"
    if not isinstance(losses, list) or len(losses) != k:
        return f"losses must list one value per cluster ({k}), got {losses!r}"
    return None


class IFCAStrategy(FairnessStrategy):
    """IFCA, or Fair-FCA when `lambda > 0` (the clients apply the rule; see module docstring).

    A client keeps the cluster it last joined until it next trains successfully, so a failed
    client is evaluated with its previous cluster's model, and a cluster that loses all its
    members keeps its model.
    """

    evaluate_type = IFCA_EVALUATE

    def __init__(self, run: RunContext) -> None:
        super().__init__(run)
        task = TASKS[self.config.task]
        self.models = initial_cluster_models(task.width, task.hidden, self.config.seed, self.config.k)
        self.client_cluster: dict[int, int] = {}

    def initial_arrays(self) -> ArrayRecord:
        return models_record(self.models)

    def warming_up(self, server_round: int) -> bool:
        return server_round <= self.config.warmup_rounds

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        nodes = self.node_ids(grid)
        if self.warming_up(server_round):
            return self.send(grid, server_round, MessageType.TRAIN, {n: to_record(self.models[0]) for n in nodes})
        record = models_record(self.models)
        return self.send(grid, server_round, IFCA_TRAIN, {n: record for n in nodes})

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        if self.warming_up(server_round):
            updates = self.usable_updates(replies)
            warm = weighted_average([u.params for u in updates], [u.weight for u in updates]) if updates else self.models[0]
            last = server_round == self.config.warmup_rounds
            self.models = perturbed_copies(warm, self.config.k, self.config.seed) if last else [warm] * self.config.k
            return models_record(self.models), None
        updates = self.usable_updates(replies, lambda metrics: cluster_reply_problem(metrics, self.config.k))
        assignments = [int(u.metrics["cluster"]) for u in updates]
        self.models = aggregate_clusters(self.models, [u.params for u in updates], [u.weight for u in updates], assignments)
        self.client_cluster.update({u.state_index: c for u, c in zip(updates, assignments)})
        self.stage_clusters(server_round, updates)
        return models_record(self.models), None

    def stage_clusters(self, server_round: int, updates: list[Update]) -> None:
        rows = []
        for u in updates:
            row = {"round": server_round, "state": self.clients[u.state_index], "cluster": int(u.metrics["cluster"])}
            row.update({f"loss_{j}": float(v) for j, v in enumerate(u.metrics["losses"])})
            rows.append(row)
        self.staged["clusters.csv"] = pd.DataFrame(rows, columns=["round", "state", "cluster"]
                                                   + [f"loss_{j}" for j in range(self.config.k)])

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Every client gets the k models and each client's cluster (0 until it joins one) and deploys its own."""
        clusters = [self.client_cluster.get(i, 0) for i in range(len(self.clients))]
        record = models_record(self.models)
        return self.send(grid, server_round, self.evaluate_type, {n: record for n in self.node_ids(grid)},
                         {"clusters": clusters})

    def cluster_of_clients(self) -> dict[int, int]:
        return dict(self.client_cluster)

    def checkpoint_state(self) -> dict[str, Any]:
        clusters = {self.clients[i]: c for i, c in sorted(self.client_cluster.items())}
        return {**super().checkpoint_state(), "clusters": clusters}

    def resume(self, checkpoint: Checkpoint) -> ArrayRecord:
        arrays = super().resume(checkpoint)
        self.models = [from_record(arrays, cluster_prefix(j)) for j in range(self.config.k)]
        self.client_cluster = {self.clients.index(label): int(c) for label, c in checkpoint.strategy_state["clusters"].items()}
        return arrays
