"""IFCA clustered FL (Ghosh et al. 2020) and its fairness-aware cluster choice (Fair-FCA).

k cluster models live on the server. Every round each client scores all k on its own
training data, joins the best, trains that one model and returns it; the server averages
each cluster's updates separately. Fair-FCA's score adds the client's fairness gap under
each model, weighted by `lambda`; with `lambda = 0` its rule is IFCA's argmin of loss, bit
for bit.

What goes over the wire: for training every client receives all k models, because IFCA's
cluster choice is made by the client on its own data and needs every candidate; shipping
only "its" cluster would freeze the first assignment. For evaluation each client receives
only the model of the cluster it last joined (cluster 0 before it joins one): the round loop
knows which node serves which client. A client that failed this round's training keeps its
previous cluster. One income model is about 13 kB, so k models per client per round cost
little next to local training.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import MetricRecord, RecordDict

from clients.job import ClientJob, ClientReply
from clients.local import TRAIN, score_models, train_local
from core.params import Params, from_record
from core.settings import ConfigError, at_least
from core.wire import EXAMPLES_KEY, TRAIN_LOSS_KEY, evaluate_type, train_type
from strategies.aggregation import weighted_average
from strategies.algorithm import Algorithm, Payload, ServerSetup, StrategySpec
from strategies.fairness import FairnessSettings
from strategies.fedavg import HANDLERS as FEDAVG_HANDLERS
from strategies.replies import Update

TRAIN_MESSAGE = train_type("ifca")


@dataclass(frozen=True)
class IFCASettings:
    """k cluster models, after `warmup-rounds` rounds of FedAvg (then k noisy copies of its model)."""

    k: int = 2
    warmup_rounds: int = 0

    def validate(self, config: Any) -> None:
        at_least("k", self.k, 1)
        at_least("warmup-rounds", self.warmup_rounds, 0)
        if self.warmup_rounds >= config.num_server_rounds:
            raise ConfigError(
                f"config key 'warmup-rounds' ({self.warmup_rounds}) must be smaller than "
                f"'num-server-rounds' ({config.num_server_rounds})"
            )

    def choice_rule(self) -> tuple[float, str, str] | None:
        """Fair-FCA's (lambda, attribute, metric); None: IFCA's loss-only choice."""
        return None


@dataclass(frozen=True)
class FairIFCASettings(FairnessSettings, IFCASettings):
    """Fair-FCA: the choice minimises loss_j + lambda * gap_j (the client's gap under model j)."""

    def choice_rule(self) -> tuple[float, str, str] | None:
        return self.fairness()


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


def cluster_seeds(seed: int, k: int) -> list[int]:
    """The seeds of k independently initialised cluster models, derived from (seed, j)."""
    return [int(np.random.SeedSequence([seed, j]).generate_state(1)[0]) for j in range(k)]


def perturbed_copies(model: Params, k: int, seed: int, scale: float = 0.01) -> list[Params]:
    """k copies of a warm-start model with small seeded noise, so the clusters can separate."""
    out = []
    for j in range(k):
        rng = np.random.default_rng([seed, j, 7])
        out.append({key: (v + rng.normal(0.0, scale, v.shape)).astype(v.dtype) for key, v in model.items()})
    return out


def models_arrays(models: Sequence[Params]) -> Params:
    """The k models in one flat dict, each under its cluster's key prefix."""
    return {f"{cluster_prefix(j)}{key}": value for j, model in enumerate(models) for key, value in model.items()}


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


def train_in_cluster(job: ClientJob, content: RecordDict) -> ClientReply:
    """Score the k received models on the training split, join the best, train it."""
    job.raise_if("train-error")
    config, data, own = job.config, job.data, job.config.params
    models = [from_record(content["arrays"], cluster_prefix(j)) for j in range(own.k)]
    rule = own.choice_rule()
    lam, attribute, metric = rule if rule else (0.0, "sex", "sp")
    losses, gaps = score_models(models, data.train, attribute, metric)
    cluster = choose_cluster(losses, gaps, lam)
    params, loss = train_local(
        models[cluster], data.train, lr=config.lr, epochs=config.local_epochs,
        batch_size=config.batch_size, rng=job.rng(TRAIN),
    )
    metrics = {EXAMPLES_KEY: len(data.train), TRAIN_LOSS_KEY: loss, "cluster": cluster,
               "losses": [float(v) for v in losses]}
    if rule:
        metrics["gaps"] = [float(v) for v in gaps]  # what the choice used: recorded in clusters.csv
    return ClientReply(metrics, params)


class IFCA(Algorithm):
    """IFCA, or Fair-FCA with a choice rule (the clients apply it; see module docstring).

    A client keeps the cluster it last joined until it next trains successfully, so a failed
    client is evaluated with its previous cluster's model, and a cluster that loses all its
    members keeps its model.
    """

    evaluate_message = evaluate_type()

    def __init__(self, setup: ServerSetup) -> None:
        super().__init__(setup)
        self.own = setup.config.params
        self.models = [setup.init_model(s) for s in cluster_seeds(setup.config.seed, self.own.k)]
        self.client_cluster: dict[int, int] = {}
        self.arrays = models_arrays(self.models)

    def warming_up(self, server_round: int) -> bool:
        return server_round <= self.own.warmup_rounds

    def train_message_for(self, server_round: int) -> str:
        return train_type() if self.warming_up(server_round) else TRAIN_MESSAGE

    def train_payload(self, server_round: int, client: int) -> Payload:
        return Payload(self.models[0] if self.warming_up(server_round) else self.arrays)

    def check_update(self, server_round: int, metrics: MetricRecord) -> str | None:
        return None if self.warming_up(server_round) else cluster_reply_problem(metrics, self.own.k)

    def aggregate(self, server_round: int, updates: Sequence[Update]) -> list[dict[str, Any]] | None:
        if self.warming_up(server_round):
            warm = weighted_average([u.params for u in updates], [u.weight for u in updates]) if updates else self.models[0]
            last = server_round == self.own.warmup_rounds
            self.models = perturbed_copies(warm, self.own.k, self.config.seed) if last else [warm] * self.own.k
            self.arrays = models_arrays(self.models)
            return None
        assignments = [int(u.metrics["cluster"]) for u in updates]
        self.models = aggregate_clusters(self.models, [u.params for u in updates], [u.weight for u in updates], assignments)
        self.arrays = models_arrays(self.models)
        self.client_cluster.update({u.client_index: c for u, c in zip(updates, assignments)})
        return [self.choice_row(server_round, u) for u in updates]

    def choice_row(self, server_round: int, update: Update) -> dict[str, Any]:
        """A clusters.csv row: the choice, each model's loss and, when the rule used them, its gap."""
        row = {"round": server_round, "state": self.clients[update.client_index], "cluster": int(update.metrics["cluster"])}
        row.update({f"loss_{j}": float(v) for j, v in enumerate(update.metrics["losses"])})
        if self.own.choice_rule():
            row.update({f"gap_{j}": float(v) for j, v in enumerate(update.metrics["gaps"])})
        return row

    def evaluate_payload(self, server_round: int, client: int) -> Payload:
        return Payload(self.models[self.client_cluster.get(client, 0)])

    def clusters(self) -> dict[int, int]:
        return dict(self.client_cluster)

    def state(self) -> tuple[Params, dict[str, Any]]:
        clusters = {self.clients[i]: c for i, c in sorted(self.client_cluster.items())}
        return self.arrays, {"clusters": clusters}

    def restore(self, arrays: Params, state: Mapping[str, Any]) -> None:
        self.models = [{k[len(cluster_prefix(j)):]: v for k, v in arrays.items() if k.startswith(cluster_prefix(j))}
                       for j in range(self.own.k)]
        self.arrays = models_arrays(self.models)
        self.client_cluster = {self.clients.index(label): int(c) for label, c in state["clusters"].items()}


HANDLERS = {**FEDAVG_HANDLERS, TRAIN_MESSAGE: train_in_cluster}
STUDY = {"lr": 0.05, "local-epochs": 1}

SPEC = StrategySpec(
    name="ifca",
    summary=("`k` seeded cluster models; every client scores all k on its training data, joins the lowest loss "
             "and trains it; the server averages each cluster; clients deploy their cluster's model"),
    server=IFCA,
    settings=IFCASettings,
    handlers=HANDLERS,
    study=STUDY,
    personalized=True,
)
FAIR_SPEC = StrategySpec(
    name="fair-ifca",
    summary=("Fair-FCA: IFCA whose choice minimises `loss_j + lambda * gap_j`, the client's `fair-metric` gap for "
             "`fair-attribute` under model j on its training data (`lambda = 0` is IFCA exactly)"),
    server=IFCA,
    settings=FairIFCASettings,
    handlers=HANDLERS,
    study=STUDY,
    personalized=True,
)
