"""FL+HC (Briggs et al. 2020): FedAvg, one hierarchical clustering of the updates, then FedAvg per cluster.

`warmup-rounds` rounds of FedAvg; in the last of them the server also keeps each client's
update, the flattened parameter delta w_i - w_global (float64) from the model it sent, and
clusters the clients once with scipy's agglomerative clustering (`linkage`: ward, single,
complete or average, on Euclidean distances) cut into `k` clusters or at `distance-threshold`.
Every cluster then starts from the warm-up model (that round's FedAvg average) and runs its own
FedAvg; each client trains and deploys its cluster's model. clusters.csv has one row per
client for the clustering round only, the assignment being fixed afterwards.

A client without a usable update in the clustering round (it failed, or its update was
rejected) joins the largest cluster (the lowest id among equally large ones): the model most
clients share is the best guess for a client the server knows nothing about. With fewer than
two usable updates there is nothing to cluster, so the clustering moves to the next round.

Fair-FL+HC is the project's reading of the paper's one-line description: the distance adds
the difference of the clients' fairness gaps, d(i, j) = ||dw_i - dw_j|| / s + lambda *
|gap_i - gap_j|, with s the median pairwise update distance, so lambda is unitless. gap_i is
client i's `fair-metric` gap for `fair-attribute` under the received warm-up model on its own
training data, reported with its last warm-up update. The server clusters s * d(i, j), which
is the same tree, so that `distance-threshold` is in units of update distance for both
strategies and lambda = 0 is FL+HC exactly. A NaN gap (a group absent) adds nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from logging import WARNING
from typing import Any

import numpy as np
from flwr.app import MetricRecord, RecordDict
from flwr.common.logger import log

from clients.job import ClientJob, ClientReply
from clients.local import score_models
from core.params import Params, copy_params, from_record
from core.settings import ConfigError, at_least, choice
from core.wire import train_type
from strategies.aggregation import weighted_average
from strategies.algorithm import Algorithm, Payload, ServerSetup, StrategySpec
from strategies.fairness import FairnessSettings
from strategies.fedavg import HANDLERS as FEDAVG_HANDLERS
from strategies.fedavg import train_global
from strategies.ifca import aggregate_clusters, cluster_prefix, models_arrays
from strategies.replies import Update

LINKAGES = ("ward", "single", "complete", "average")
FAIR_TRAIN_MESSAGE = train_type("fair_flhc")
GAP_KEY = "gap"  # Fair-FL+HC's training reply: the received model's gap on the training split


@dataclass(frozen=True)
class FLHCSettings:
    """Warm-up rounds, then one clustering into `k` clusters or at `distance-threshold` (0: use k)."""

    k: int = 2
    warmup_rounds: int = 0
    linkage: str = "ward"
    distance_threshold: float = 0.0

    def validate(self, config: Any) -> None:
        at_least("k", self.k, 1)
        if self.warmup_rounds < 1:
            raise ConfigError(
                f"config key 'warmup-rounds' must be >= 1 for {config.strategy}: it clusters the updates of the "
                f"last warm-up round, got {self.warmup_rounds} (the study's setting is {STUDY['warmup-rounds']})"
            )
        if self.warmup_rounds >= config.num_server_rounds:
            raise ConfigError(
                f"config key 'warmup-rounds' ({self.warmup_rounds}) must be smaller than "
                f"'num-server-rounds' ({config.num_server_rounds}), so that the clusters train"
            )
        choice("linkage", self.linkage, LINKAGES)
        at_least("distance-threshold", self.distance_threshold, 0.0)
        if self.distance_threshold > 0 and self.k != FLHCSettings.k:
            raise ConfigError(
                f"config keys 'k' ({self.k}) and 'distance-threshold' ({self.distance_threshold:g}) both set the "
                "number of clusters; give only one"
            )

    def fairness(self) -> tuple[float, str, str] | None:
        """Fair-FL+HC's (lambda, attribute, metric); None: FL+HC's update distance only."""
        return None


@dataclass(frozen=True)
class FairFLHCSettings(FairnessSettings, FLHCSettings):
    """Fair-FL+HC: the distance adds lambda times the difference of the clients' gaps."""


# --- the clustering core, on numpy arrays ---------------------------------------------------------

def update_matrix(models: Sequence[Params], reference: Params) -> np.ndarray:
    """One row per model: its flattened delta from `reference`, in float64 (keys in sorted order)."""
    keys = sorted(reference)
    return np.stack([
        np.concatenate([(m[key].astype(np.float64) - reference[key].astype(np.float64)).ravel() for key in keys])
        for m in models
    ])


def update_distances(deltas: np.ndarray, gaps: np.ndarray | None = None, lam: float = 0.0) -> np.ndarray:
    """Condensed pairwise distances: Euclidean between updates, plus lambda * s * |gap_i - gap_j|.

    s is the median pairwise update distance (1 if it is 0), so the result is s times the
    unitless d(i, j) = ||dw_i - dw_j|| / s + lambda * |gap_i - gap_j| (module docstring).
    lambda = 0 returns the Euclidean distances untouched. A NaN gap adds nothing.
    """
    from scipy.spatial.distance import pdist, squareform  # scipy is the server's: kept out of the ClientApp

    euclidean = pdist(np.asarray(deltas, dtype=np.float64))
    if lam == 0.0 or gaps is None:
        return euclidean
    g = np.asarray(gaps, dtype=np.float64)
    gap_diff = np.nan_to_num(np.abs(g[:, None] - g[None, :]), nan=0.0)
    median = float(np.median(euclidean)) if len(euclidean) else 0.0
    scale = median if median > 0 else 1.0
    return euclidean + lam * scale * squareform(gap_diff, checks=False)


def cluster_labels(distances: np.ndarray, linkage: str = "ward", k: int = 2, threshold: float = 0.0) -> np.ndarray:
    """Agglomerative clusters of the observations behind condensed `distances`: `k` clusters
    (at most), or cut at `threshold` when it is > 0. Ids 0.. in order of first appearance."""
    from scipy.cluster.hierarchy import fcluster
    from scipy.cluster.hierarchy import linkage as hierarchy

    distances = np.asarray(distances, dtype=np.float64)
    n = int(round((1 + np.sqrt(1 + 8 * len(distances))) / 2))
    if n < 2:
        return np.zeros(n, dtype=int)
    tree = hierarchy(distances, method=linkage)
    raw = fcluster(tree, t=threshold, criterion="distance") if threshold > 0 else fcluster(tree, k, "maxclust")
    _, first, inverse = np.unique(raw, return_index=True, return_inverse=True)
    rank = np.argsort(np.argsort(first))
    return rank[inverse].astype(int)


def complete_assignment(assigned: Mapping[int, int], num_clients: int) -> dict[int, int]:
    """Every client's cluster: its own, or the largest cluster (lowest id on ties) if it had no update."""
    sizes = np.bincount(list(assigned.values()))
    largest = int(np.argmax(sizes))
    return {c: int(assigned.get(c, largest)) for c in range(num_clients)}


# --- the two halves --------------------------------------------------------------------------------

def train_reporting_gap(job: ClientJob, content: RecordDict) -> ClientReply:
    """FedAvg's local training, reporting first the received model's gap on the training split."""
    job.raise_if("train-error")
    _, attribute, metric = job.config.params.fairness()
    _, gaps = score_models([from_record(content["arrays"])], job.data.train, attribute, metric)
    reply = train_global(job, content)
    return ClientReply({**reply.metrics, GAP_KEY: float(gaps[0])}, reply.params)


def gap_reply_problem(metrics: MetricRecord) -> str | None:
    """Why a Fair-FL+HC clustering-round reply cannot be used; None if it can."""
    if GAP_KEY not in metrics:
        return f"missing metric '{GAP_KEY}'"
    gap = metrics[GAP_KEY]
    if isinstance(gap, bool) or not isinstance(gap, (int, float)):
        return f"gap {gap!r} is not a number"
    return None


class FLHC(Algorithm):
    """FL+HC, or Fair-FL+HC when the settings carry a fairness rule (see module docstring)."""

    def __init__(self, setup: ServerSetup) -> None:
        super().__init__(setup)
        self.own = setup.config.params
        if self.own.distance_threshold == 0 and self.own.k > len(setup.clients):
            raise ConfigError(
                f"config key 'k' ({self.own.k}) must not exceed the number of clients ({len(setup.clients)}: "
                "states x clients-per-state)"
            )
        self.model = copy_params(setup.initial)  # the global model, until the clustering
        self.models: list[Params] = []  # the cluster models, after it
        self.assignment: dict[int, int] = {}  # client -> cluster, fixed by the clustering

    @property
    def clustered(self) -> bool:
        return bool(self.assignment)

    def clustering_round(self, server_round: int) -> bool:
        return not self.clustered and server_round >= self.own.warmup_rounds

    def train_message_for(self, server_round: int) -> str:
        return FAIR_TRAIN_MESSAGE if self.own.fairness() and self.clustering_round(server_round) else self.train_message

    def train_payload(self, server_round: int, client: int) -> Payload:
        return self.evaluate_payload(server_round, client)

    def evaluate_payload(self, server_round: int, client: int) -> Payload:
        return Payload(self.models[self.assignment[client]] if self.clustered else self.model)

    def check_update(self, server_round: int, metrics: MetricRecord) -> str | None:
        return gap_reply_problem(metrics) if self.train_message_for(server_round) == FAIR_TRAIN_MESSAGE else None

    def aggregate(self, server_round: int, updates: Sequence[Update]) -> list[dict[str, Any]] | None:
        if self.clustered:
            members = [self.assignment[u.client_index] for u in updates]
            params, weights = [u.params for u in updates], [u.weight for u in updates]
            self.models = aggregate_clusters(self.models, params, weights, members)
            return None
        sent = self.model
        if updates:
            self.model = weighted_average([u.params for u in updates], [u.weight for u in updates])
        if not self.clustering_round(server_round):
            return None
        if len(updates) < 2:
            log(WARNING, "round %d: %d usable update(s), too few to cluster; clustering next round", server_round,
                len(updates))
            return None
        return self.cluster(server_round, updates, sent)

    def cluster(self, server_round: int, updates: Sequence[Update], sent: Params) -> list[dict[str, Any]]:
        """Cluster the clients by their updates from `sent`; every cluster starts from the new global model."""
        rule = self.own.fairness()
        gaps = np.array([float(u.metrics[GAP_KEY]) for u in updates]) if rule else None
        distances = update_distances(update_matrix([u.params for u in updates], sent), gaps, rule[0] if rule else 0.0)
        labels = cluster_labels(distances, self.own.linkage, self.own.k, self.own.distance_threshold)
        labelled = {u.client_index: int(c) for u, c in zip(updates, labels)}
        self.assignment = complete_assignment(labelled, len(self.clients))
        self.models = [self.model] * (int(labels.max()) + 1)
        reported = {u.client_index: float(u.metrics[GAP_KEY]) for u in updates} if rule else {}
        rows = []
        for client, cluster in sorted(self.assignment.items()):
            row = {"round": server_round, "state": self.clients[client], "cluster": cluster,
                   "assigned_by": "update" if client in labelled else "largest-cluster"}
            if rule:
                row[GAP_KEY] = reported.get(client, float("nan"))
            rows.append(row)
        return rows

    def clusters(self) -> dict[int, int]:
        return dict(self.assignment)

    def state(self) -> tuple[Params, dict[str, Any]]:
        clusters = {self.clients[i]: c for i, c in sorted(self.assignment.items())}
        return (models_arrays(self.models) if self.clustered else self.model), {"clusters": clusters}

    def restore(self, arrays: Params, state: Mapping[str, Any]) -> None:
        self.assignment = {self.clients.index(label): int(c) for label, c in state["clusters"].items()}
        if not self.clustered:
            self.model = dict(arrays)
            return
        self.models = [{k[len(cluster_prefix(j)):]: v for k, v in arrays.items() if k.startswith(cluster_prefix(j))}
                       for j in range(max(self.assignment.values()) + 1)]


STUDY = {"lr": 0.05, "local-epochs": 1, "warmup-rounds": 3}

SPEC = StrategySpec(
    name="flhc",
    summary=("FL+HC: `warmup-rounds` of FedAvg, then one agglomerative clustering (`linkage`) of the clients' last "
             "updates into `k` clusters (or at `distance-threshold`); FedAvg within each cluster, whose model its "
             "clients deploy"),
    server=FLHC,
    settings=FLHCSettings,
    handlers=FEDAVG_HANDLERS,
    study=STUDY,
    personalized=True,
)
FAIR_SPEC = StrategySpec(
    name="fair-flhc",
    summary=("Fair-FL+HC: FL+HC whose distance is the update distance over its median plus `lambda` times the "
             "difference of the clients' `fair-metric` gaps for `fair-attribute` under the warm-up model "
             "(`lambda = 0` is FL+HC exactly)"),
    server=FLHC,
    settings=FairFLHCSettings,
    handlers={**FEDAVG_HANDLERS, FAIR_TRAIN_MESSAGE: train_reporting_gap},
    study=STUDY,
    personalized=True,
)
