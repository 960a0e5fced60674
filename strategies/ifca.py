"""IFCA clustered FL (Ghosh et al. 2020) and its fairness-aware cluster choice (Fair-FCA).

k cluster models live on the server. Every round each client scores all k on its own
training data, joins the best, trains that one model and returns it; the server averages
each cluster's updates separately. With `lambda > 0` the score adds the client's fairness
gap under each model (Fair-FCA); with `lambda = 0` the rule is IFCA's argmin of loss, bit
for bit.

What goes over the wire: for training every client receives all k models, because IFCA's
cluster choice is made by the client on its own data and needs every candidate; shipping
only "its" cluster would freeze the first assignment. For evaluation a client receives only
the model of the cluster it joined, which is the model it would deploy. One income model is
about 13 kB, so k models per client per round cost little next to local training.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord
from flwr.serverapp import Grid

from clients.model import init_params
from clients.tasks import TASKS
from strategies.aggregation import Params, weighted_average
from strategies.base import FairnessStrategy, RunContext
from strategies.messages import from_record, to_record

IFCA_TRAIN = "train.ifca"


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


class IFCAStrategy(FairnessStrategy):
    """IFCA, or Fair-FCA when `lambda > 0` (the clients apply the rule; see module docstring)."""


    def __init__(self, run: RunContext) -> None:
        super().__init__(run)
        task = TASKS[self.config.task]
        self.models = initial_cluster_models(task.width, task.hidden, self.config.seed, self.config.k)
        self.node_cluster: dict[int, int] = {}
        self.state_cluster: dict[int, int] = {}

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
        replies = self.replies_ok(replies)
        updates = [from_record(m.content["arrays"]) for m in replies]
        weights = [float(m.content["metrics"]["num-examples"]) for m in replies]
        if self.warming_up(server_round):
            warm = weighted_average(updates, weights)
            last = server_round == self.config.warmup_rounds
            self.models = perturbed_copies(warm, self.config.k, self.config.seed) if last else [warm] * self.config.k
            return models_record(self.models), None
        assignments = [int(m.content["metrics"]["cluster"]) for m in replies]
        self.models = aggregate_clusters(self.models, updates, weights, assignments)
        self.node_cluster = {m.metadata.src_node_id: c for m, c in zip(replies, assignments)}
        self.state_cluster = {int(m.content["metrics"]["state-index"]): c for m, c in zip(replies, assignments)}
        self.write_clusters(server_round, replies)
        sizes = np.bincount(assignments, minlength=self.config.k)
        return models_record(self.models), MetricRecord({f"clients-in-{j}": int(s) for j, s in enumerate(sizes)})

    def write_clusters(self, server_round: int, replies: list[Message]) -> None:
        rows = []
        for m in replies:
            metrics = m.content["metrics"]
            row = {"round": server_round, "state": self.states[int(metrics["state-index"])], "cluster": int(metrics["cluster"])}
            row.update({f"loss_{j}": float(v) for j, v in enumerate(metrics["losses"])})
            rows.append(row)
        self.run.writer.append("clusters.csv", pd.DataFrame(rows).sort_values("state"))

    def deployed_model(self, node_id: int, arrays: ArrayRecord) -> ArrayRecord:
        return to_record(self.models[self.node_cluster.get(node_id, 0)])

    def cluster_of_states(self) -> dict[int, int]:
        return dict(self.state_cluster)
