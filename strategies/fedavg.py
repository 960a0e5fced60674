"""FedAvg: every client trains the global model; the server averages, weighted by training examples.

Its client handlers are the plain `train` and `evaluate` ones, which other strategies reuse
(IFCA's warm-up, Flower's built-in strategies). Training honours a `proximal-mu` entry in
the message config (FedProx's term, sent by `flwr:FedProx`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from flwr.app import RecordDict

from clients.job import ClientJob, ClientReply
from clients.local import TRAIN, evaluate_local, train_local
from core.params import Params, copy_params, from_record
from core.wire import EXAMPLES_KEY, TRAIN_LOSS_KEY, evaluate_type, evaluation_to_metrics, train_type
from strategies.aggregation import weighted_average
from strategies.algorithm import Algorithm, Payload, ServerSetup, StrategySpec
from strategies.replies import Update

PROXIMAL_MU_KEY = "proximal-mu"


def train_global(job: ClientJob, content: RecordDict) -> ClientReply:
    """Local SGD on the received model (with FedProx's proximal term when the server sends one)."""
    job.raise_if("train-error")
    config, data = job.config, job.data
    received = from_record(content["arrays"])
    mu = float(content["config"].get(PROXIMAL_MU_KEY, 0.0))
    params, loss = train_local(
        received, data.train, lr=config.lr, epochs=config.local_epochs, batch_size=config.batch_size,
        rng=job.rng(TRAIN), prox_mu=mu,
    )
    return ClientReply({EXAMPLES_KEY: len(data.train), TRAIN_LOSS_KEY: loss}, params)


def evaluate_received(job: ClientJob, content: RecordDict) -> ClientReply:
    """The received model on the client's test split (and validation split, if any)."""
    job.raise_if("evaluate-error")
    params = from_record(content["arrays"])
    metrics: dict[str, Any] = {EXAMPLES_KEY: len(job.data.test)}
    for prefix, split in job.evaluation_splits():
        metrics.update(evaluation_to_metrics(evaluate_local(params, split, job.index), prefix))
    return ClientReply(metrics)


HANDLERS = {train_type(): train_global, evaluate_type(): evaluate_received}


class FedAvg(Algorithm):
    """McMahan et al.'s FedAvg with full participation: one global model, sent to every client."""

    def __init__(self, setup: ServerSetup) -> None:
        super().__init__(setup)
        self.model = copy_params(setup.initial)

    def train_payload(self, server_round: int, client: int) -> Payload:
        return self.global_payload

    def evaluate_payload(self, server_round: int, client: int) -> Payload:
        return self.global_payload

    @property
    def global_payload(self) -> Payload:
        return Payload(self.model)

    def aggregate(self, server_round: int, updates: Sequence[Update]) -> None:
        """The weighted average of the usable updates; the model stays when there are none."""
        if updates:
            self.model = weighted_average([u.params for u in updates], [u.weight for u in updates])

    def state(self) -> tuple[Params, dict[str, Any]]:
        return self.model, {}

    def restore(self, arrays: Params, state: Mapping[str, Any]) -> None:
        self.model = dict(arrays)


SPEC = StrategySpec(
    name="fedavg",
    summary="every client trains the global model; the server averages, weighted by training examples",
    server=FedAvg,
    handlers=HANDLERS,
    study={"lr": 0.001, "local-epochs": 10},
)
