"""Flower's built-in Message-API strategies, unchanged, behind the fairness hook: `flwr:<Name>`.

The built-in strategy configures and aggregates training exactly as it does in any Flower
app: it is handed the grid, the global model and the run's message config, and its replies.
The project adds what every strategy gets: full participation of the run's clients, reply
checks before aggregation (a NaN or misshapen update is never averaged), the evaluation of
every client through the fairness hook, and the results contract. Clients train with the
plain `train` handler (strategies/fedavg.py), which applies FedProx's `proximal-mu`.

Hyperparameters come from config keys; each strategy reads only its own (docs/strategies.md table).
Resume: the stateless strategies need only the global model, so a resumed run equals an
uninterrupted one; FedAvgM and the FedOpt family keep server optimiser state between
rounds, which Flower does not expose for saving, so resuming them is refused before training.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from flwr.app import ConfigRecord, Message
from flwr.serverapp import strategy as flower_strategies

from core.params import from_record, to_record
from core.rounds import RoundHealth
from core.settings import ConfigError, at_least, keys_of
from core.wire import ROUND_KEY, TRAIN_LOSS_KEY, train_type
from strategies.algorithm import Payload, Request, ServerSetup, StrategySpec
from strategies.fedavg import HANDLERS, FedAvg
from strategies.replies import usable_replies

PREFIX = "flwr:"


@dataclass(frozen=True)
class FlowerSettings:
    """Hyperparameters of Flower's built-in strategies (Flower's own defaults)."""

    proximal_mu: float = 0.0
    server_lr: float = 1.0
    server_momentum: float = 0.0
    eta_l: float = 0.1
    beta_1: float = 0.9
    beta_2: float = 0.99
    tau: float = 0.001
    trim_beta: float = 0.2
    num_malicious: int = 0
    num_selected: int = 1
    qffl_q: float = 0.1

    def validate(self, config: Any) -> None:
        at_least("proximal-mu", self.proximal_mu, 0.0)
        at_least("server-lr", self.server_lr, 0.0, strict=True)
        at_least("server-momentum", self.server_momentum, 0.0)
        at_least("tau", self.tau, 0.0, strict=True)
        at_least("num-malicious", self.num_malicious, 0)
        at_least("num-selected", self.num_selected, 1)
        at_least("qffl-q", self.qffl_q, 0.0)
        if not 0.0 <= self.trim_beta < 0.5:
            raise ConfigError(f"config key 'trim-beta' must be in [0, 0.5), got {self.trim_beta:g}")
        name = config.strategy[len(PREFIX):]
        defaults = FlowerSettings()
        for key, field in keys_of(FlowerSettings).items():
            if key not in OWN_KEYS[name] and getattr(self, field.name) != getattr(defaults, field.name):
                read = [n for n, keys in OWN_KEYS.items() if key in keys]
                raise ConfigError(
                    f"config key '{key}' is not read by strategy '{config.strategy}' (it is read by "
                    f"{', '.join(PREFIX + n for n in read)}); keys of '{config.strategy}': "
                    f"{', '.join(OWN_KEYS[name]) or 'none'}"
                )


def _fedopt(name: str, betas: bool) -> Callable[[FlowerSettings, Any], Any]:
    def build(s: FlowerSettings, config: Any) -> Any:
        extra = {"beta_1": s.beta_1, "beta_2": s.beta_2} if betas else {}
        return getattr(flower_strategies, name)(eta=s.server_lr, eta_l=s.eta_l, tau=s.tau, **extra, **FULL)
    return build


FULL = {"min_train_nodes": 1, "min_evaluate_nodes": 1, "min_available_nodes": 1}  # the loop checks the size
BUILDERS: dict[str, Callable[[FlowerSettings, Any], Any]] = {
    "FedAvg": lambda s, c: flower_strategies.FedAvg(**FULL),
    "FedProx": lambda s, c: flower_strategies.FedProx(proximal_mu=s.proximal_mu, **FULL),
    "FedAvgM": lambda s, c: flower_strategies.FedAvgM(
        server_learning_rate=s.server_lr, server_momentum=s.server_momentum, **FULL),
    "FedAdam": _fedopt("FedAdam", betas=True),
    "FedYogi": _fedopt("FedYogi", betas=True),
    "FedAdagrad": _fedopt("FedAdagrad", betas=False),
    "FedMedian": lambda s, c: flower_strategies.FedMedian(**FULL),
    "FedTrimmedAvg": lambda s, c: flower_strategies.FedTrimmedAvg(beta=s.trim_beta, **FULL),
    "Krum": lambda s, c: flower_strategies.Krum(num_malicious_nodes=s.num_malicious, **FULL),
    "MultiKrum": lambda s, c: flower_strategies.MultiKrum(
        num_malicious_nodes=s.num_malicious, num_nodes_to_select=s.num_selected, **FULL),
    "Bulyan": lambda s, c: flower_strategies.Bulyan(num_malicious_nodes=s.num_malicious, **FULL),
    "QFedAvg": lambda s, c: flower_strategies.QFedAvg(
        client_learning_rate=c.lr, q=s.qffl_q, train_loss_key=TRAIN_LOSS_KEY, **FULL),
}
STATEFUL = ("FedAvgM", "FedAdam", "FedYogi", "FedAdagrad")  # server optimiser state: no resume
OWN_KEYS: dict[str, tuple[str, ...]] = {
    "FedAvg": (), "FedProx": ("proximal-mu",), "FedAvgM": ("server-lr", "server-momentum"),
    "FedAdam": ("server-lr", "eta-l", "beta-1", "beta-2", "tau"),
    "FedYogi": ("server-lr", "eta-l", "beta-1", "beta-2", "tau"),
    "FedAdagrad": ("server-lr", "eta-l", "tau"), "FedMedian": (), "FedTrimmedAvg": ("trim-beta",),
    "Krum": ("num-malicious",), "MultiKrum": ("num-malicious", "num-selected"), "Bulyan": ("num-malicious",),
    "QFedAvg": ("qffl-q",),
}
NAMES = tuple(PREFIX + name for name in BUILDERS)


class ClientsAsNodes:
    """What a built-in's `configure_train` asks of a grid, the node ids, answered with client indices."""

    def __init__(self, clients: Sequence[int]) -> None:
        self.clients = list(clients)

    def get_node_ids(self) -> list[int]:
        return self.clients


class FlowerStrategy(FedAvg):
    """A built-in strategy trains; the global model it returns is evaluated like FedAvg's."""

    def __init__(self, setup: ServerSetup) -> None:
        super().__init__(setup)
        self.flower_name = setup.config.strategy[len(PREFIX):]
        self.builtin = BUILDERS[self.flower_name](setup.config.params, setup.config)

    def train_request(self, server_round: int, clients: Sequence[int]) -> Request | None:
        """The built-in's own messages, addressed to `clients` (which it sees as its nodes). With no
        client reachable there is nothing to configure (the built-in would wait for nodes)."""
        if not clients:
            return None
        config = ConfigRecord({ROUND_KEY: server_round})
        messages = self.builtin.configure_train(server_round, to_record(self.model), config, ClientsAsNodes(clients))
        payloads = {m.metadata.dst_node_id: Payload(m.content["arrays"], dict(m.content["config"])) for m in messages}
        return Request(messages[0].metadata.message_type if messages else train_type(), payloads)

    def train_done(self, server_round: int, replies: Sequence[Message], health: RoundHealth) -> None:
        usable = usable_replies(replies, self.shapes, self.clients, health)
        health.model_kept = not usable
        arrays, _ = self.builtin.aggregate_train(server_round, [message for _, message in usable])
        if arrays is not None:
            self.model = {k: v.astype(self.setup.initial[k].dtype) for k, v in from_record(arrays).items()}


def flower_spec(name: str) -> StrategySpec:
    """The spec of `flwr:<Name>`."""
    return StrategySpec(
        name=name,
        summary=f"Flower's built-in `{name[len(PREFIX):]}`, unchanged, with the fairness hook",
        server=FlowerStrategy,
        settings=FlowerSettings,
        handlers=HANDLERS,
        study={"lr": 0.001, "local-epochs": 10},
    )


def validate_name(name: str) -> None:
    if name not in NAMES:
        raise ConfigError(f"unknown strategy '{name}'; valid Flower strategies: {', '.join(NAMES)}")


def resume_refusal(name: str) -> str | None:
    """Why a run of this strategy cannot be resumed (None: it can)."""
    flower = name[len(PREFIX):]
    if flower in STATEFUL:
        return (f"strategy '{name}' keeps server optimiser state between rounds that Flower does not expose for "
                "saving, so a resumed run would differ from an uninterrupted one; start a new run")
    return None
