"""Ditto (Li et al. 2021): FedAvg's global model, and per client a personal model held near it.

Each round every client receives the global model w and its own personal model v in one
message (key prefixes `global.` and `personal.`). It trains w exactly as FedAvg does, and v
on its own data with the proximal term `ditto-mu`/2 * ||v - w||^2, anchored at the w it
received, for the same budget (`lr`, `local-epochs`). It returns both; the server averages
the w's (FedAvg's weighted average) and keeps each client's v. Clients deploy v (plain metric
names); `global_*` metrics report w, as Per-FedAvg's do.

Both models walk the same batch order (the client's TRAIN stream), so Ditto's global model is
FedAvg's, bit for bit, and with `ditto-mu = 0` the personal model is `local`'s (both tested).

`ditto-mu` interpolates between local training (0) and the global model (large). The default
0.1 lies in both of Li et al.'s per-device grids for lambda ({0.05, 0.1, 0.2} and {0.1, 1, 2}).
In benchmarks/perfedavg_sweep.py (paper setup, 10 states of the real file, 8 rounds) the mean
validation accuracy was 0.6827 with 0.01, 0.6806 with 0.1 and 0.6682 with 1 (local training
0.6827, FedAvg 0.6624; at 20 rounds 0.7323, 0.7300, 0.7266, local 0.7327, FedAvg 0.7245):
0.01 is local training in all but name at this lr, 1 gives most of the gain up, and 0.1 is
the smallest grid value that keeps v measurably tied to w. At the study's
lr 0.001 x 10 epochs of 32-record batches the term pulls v about 3% of the way back to w per
round on 1,000 training records.

The personal models are held on the server for the same reasons as `local`'s (see
strategies/local.py): a ClientApp's `Context.state` does not survive a SuperNode restart nor a
resume, the server's checkpoint does. A client that fails a round keeps its personal model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from flwr.app import MetricRecord, RecordDict

from clients.job import ClientJob, ClientReply
from clients.local import TRAIN, ditto_personal_step, train_local
from core.params import Params, copy_params, from_record
from core.settings import at_least
from core.wire import EXAMPLES_KEY, TRAIN_LOSS_KEY, Evaluation, evaluate_type, train_type
from strategies.aggregation import weighted_average
from strategies.algorithm import Algorithm, Payload, ServerSetup, StrategySpec
from strategies.local import keep_or_replace, one_model, personal_arrays, personal_from_arrays
from strategies.replies import Update
from strategies.two_models import evaluate_both, read_both

NAME = "ditto"
TRAIN_MESSAGE = train_type(NAME)
EVALUATE_MESSAGE = evaluate_type(NAME)
GLOBAL, PERSONAL = "global.", "personal."  # array key prefixes of the two models in one message


@dataclass(frozen=True)
class DittoSettings:
    """The weight of the personal model's proximal term towards the global model."""

    ditto_mu: float = 0.1

    def validate(self, config: object) -> None:
        at_least("ditto-mu", self.ditto_mu, 0.0)


def both_models(global_model: Params, personal: Params) -> Params:
    """The two models in one flat dict, under their prefixes."""
    return {**{GLOBAL + k: v for k, v in global_model.items()}, **{PERSONAL + k: v for k, v in personal.items()}}


def train_ditto(job: ClientJob, content: RecordDict) -> ClientReply:
    """FedAvg's local training of the global model, and the proximal personal step anchored at it."""
    job.raise_if("train-error")
    config, data = job.config, job.data
    received = from_record(content["arrays"], GLOBAL)
    personal = from_record(content["arrays"], PERSONAL)
    budget = {"lr": config.lr, "epochs": config.local_epochs, "batch_size": config.batch_size}
    new_global, loss = train_local(received, data.train, rng=job.rng(TRAIN), **budget)
    new_personal, _ = ditto_personal_step(personal, received, data.train, mu=config.params.ditto_mu,
                                          rng=job.rng(TRAIN), **budget)
    return ClientReply({EXAMPLES_KEY: len(data.train), TRAIN_LOSS_KEY: loss}, both_models(new_global, new_personal))


def evaluate_ditto(job: ClientJob, content: RecordDict) -> ClientReply:
    """The personal model (deployed) and the global model, on the test split (and validation)."""
    job.raise_if("evaluate-error")
    global_model = from_record(content["arrays"], GLOBAL)
    personal = from_record(content["arrays"], PERSONAL)
    return evaluate_both(job, personal, global_model)


class Ditto(Algorithm):
    """FedAvg over the global halves of the updates; each client's personal half kept for it."""

    train_message = TRAIN_MESSAGE
    evaluate_message = EVALUATE_MESSAGE

    def __init__(self, setup: ServerSetup) -> None:
        super().__init__(setup)
        initial = setup.initial
        self.model = copy_params(initial)
        self.personal: dict[int, Params] = {c: initial for c in range(len(self.clients))}
        self.shapes = {k: v.shape for k, v in both_models(initial, initial).items()}  # an update holds both

    def train_payload(self, server_round: int, client: int) -> Payload:
        return Payload(both_models(self.model, self.personal[client]))

    def evaluate_payload(self, server_round: int, client: int) -> Payload:
        return self.train_payload(server_round, client)

    def aggregate(self, server_round: int, updates: Sequence[Update]) -> None:
        """The global model: the weighted average of the updates' global halves (kept when there are none)."""
        if updates:
            self.model = weighted_average([one_model(u.params, GLOBAL) for u in updates], [u.weight for u in updates])
        own = {u.client_index: one_model(u.params, PERSONAL) for u in updates}
        self.personal = keep_or_replace(self.personal, own)

    def read_evaluation(self, metrics: MetricRecord, prefix: str = "") -> dict[str, Evaluation]:
        return read_both(metrics, prefix)

    def state(self) -> tuple[Params, dict[str, Any]]:
        arrays = {GLOBAL + k: v for k, v in self.model.items()}
        return {**arrays, **personal_arrays(self.personal, self.clients, PERSONAL)}, {}

    def restore(self, arrays: Params, state: Mapping[str, Any]) -> None:
        self.model = one_model(arrays, GLOBAL)
        self.personal = personal_from_arrays(arrays, self.clients, PERSONAL)


SPEC = StrategySpec(
    name=NAME,
    summary=("Ditto: FedAvg trains the global model; each client also trains a personal model on its own data, "
             "penalised by `ditto-mu`/2 times its squared distance to the global model it received, and deploys it; "
             "`global_*` metrics report the global model"),
    server=Ditto,
    settings=DittoSettings,
    handlers={TRAIN_MESSAGE: train_ditto, EVALUATE_MESSAGE: evaluate_ditto},
    study={"lr": 0.001, "local-epochs": 10},
    personalized=True,
)
