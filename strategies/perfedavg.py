"""Per-FedAvg: FedAvg over locally meta-trained models; each client deploys its adapted copy.

The server side is FedAvg's weighted average. What differs happens on the clients (see
`clients.kernels.meta_train` and `adapt`; tests/dense_perfedavg.py is their dense reference): local
training is MAML-style meta-training, and evaluation reports both the adapted model (deployed) and
the unadapted global model, so the effect of personalization on accuracy and fairness is visible
within one run.

Adaptation has its own step size `adapt-lr`: the study's lr (0.001) is FedAvg's, and 5 steps
of it barely moved the model (adapted and global mean accuracy differed by less than 0.001 on
the real data). The defaults, 32 steps of 0.2, were chosen on validation accuracy by
benchmarks/perfedavg_sweep.py (docs/strategies.md and benchmarks/RESULTS.md give the figures).
"""

from __future__ import annotations

from dataclasses import dataclass

from flwr.app import MetricRecord, RecordDict

from clients.job import ClientJob, ClientReply
from clients.local import ADAPT, TRAIN, adapt_local, meta_train_local
from core.params import from_record
from core.settings import at_least, choice
from core.wire import EXAMPLES_KEY, TRAIN_LOSS_KEY, Evaluation, evaluate_type, train_type
from strategies.algorithm import StrategySpec
from strategies.fedavg import FedAvg
from strategies.two_models import evaluate_both, read_both

NAME = "perfedavg"
TRAIN_MESSAGE = train_type(NAME)
EVALUATE_MESSAGE = evaluate_type(NAME)
MAML_VARIANTS = ("first-order", "hessian-free")


@dataclass(frozen=True)
class PerFedAvgSettings:
    """Inner step size = lr; outer step size = meta-lr; adaptation: `adapt-steps` SGD steps of `adapt-lr`."""

    maml_variant: str = "first-order"
    meta_lr: float = 0.001
    adapt_steps: int = 32
    adapt_lr: float = 0.2

    def validate(self, config: object) -> None:
        choice("maml-variant", self.maml_variant, MAML_VARIANTS)
        at_least("meta-lr", self.meta_lr, 0.0, strict=True)
        at_least("adapt-steps", self.adapt_steps, 0)
        at_least("adapt-lr", self.adapt_lr, 0.0, strict=True)


def train_meta(job: ClientJob, content: RecordDict) -> ClientReply:
    job.raise_if("train-error")
    config, data, own = job.config, job.data, job.config.params
    params, loss = meta_train_local(
        from_record(content["arrays"]), data.train, alpha=config.lr, beta=own.meta_lr,
        epochs=config.local_epochs, batch_size=config.batch_size, rng=job.rng(TRAIN), variant=own.maml_variant,
    )
    return ClientReply({EXAMPLES_KEY: len(data.train), TRAIN_LOSS_KEY: loss}, params)


def evaluate_adapted(job: ClientJob, content: RecordDict) -> ClientReply:
    """The adapted model (deployed) and the received global model, both on the test split."""
    job.raise_if("evaluate-error")
    config, data = job.config, job.data
    global_params = from_record(content["arrays"])
    own = config.params
    adapted = adapt_local(global_params, data.train, steps=own.adapt_steps, lr=own.adapt_lr,
                          batch_size=config.batch_size, rng=job.rng(ADAPT))
    return evaluate_both(job, adapted, global_params)


class PerFedAvg(FedAvg):
    """FedAvg aggregation of meta-models; evaluation of adapted and global models."""

    train_message = TRAIN_MESSAGE
    evaluate_message = EVALUATE_MESSAGE

    def read_evaluation(self, metrics: MetricRecord, prefix: str = "") -> dict[str, Evaluation]:
        return read_both(metrics, prefix)


SPEC = StrategySpec(
    name=NAME,
    summary=("MAML-style meta-training (first-order or Hessian-free), one outer step per minibatch; each client "
             "deploys the global model adapted by `adapt-steps` SGD steps of `adapt-lr` on its training split; "
             "`global_*` metrics report the unadapted model"),
    server=PerFedAvg,
    settings=PerFedAvgSettings,
    handlers={TRAIN_MESSAGE: train_meta, EVALUATE_MESSAGE: evaluate_adapted},
    study={"lr": 0.001, "local-epochs": 10},
    personalized=True,
)
