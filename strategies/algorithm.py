"""What every strategy module declares: its spec, and the server half as an `Algorithm`.

An `Algorithm` is the server side of one strategy with no Flower transport and no files: it
says what each client is sent (a `Request` per exchange), aggregates the usable updates, and
reads evaluations. The round loop (strategies/loop.py) does the messaging, packing the requests
of every replicate that shares the federation into one message per client, and the recorder
(recorder/recorder.py) the writing, so an algorithm can be tested from made-up updates alone
and never knows how many replicates share its messages.

A `StrategySpec` ties the two halves together: the name, the strategy's own config keys (a
frozen dataclass of settings, validated by its `validate(config)`), the server half, the
client handlers by message type, and the study's hyperparameters for it. The registry
(strategies/registry.py) lists the specs; everything else follows from it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict

from clients.job import ClientJob, ClientReply
from clients.sources import Source
from core.params import Params
from core.rounds import RoundHealth
from core.wire import VAL_PREFIX, VAL_TAG, Evaluation, evaluate_type, metrics_to_evaluation, train_type
from strategies.replies import Update, usable_evaluations, usable_updates

Handler = Callable[[ClientJob, RecordDict], ClientReply]


@dataclass(frozen=True)
class ServerSetup:
    """What a server half is built from: the validated config, the clients, the data, the
    seeded initial model."""

    config: Any  # fl_app.config.RunConfig; `config.params` holds the strategy's own settings
    clients: tuple[str, ...]
    source: Source
    init_model: Callable[[int], Params]  # the seeded initial model for a seed (torch's init)

    @property
    def initial(self) -> Params:
        return self.init_model(self.config.seed)


@dataclass(frozen=True)
class Payload:
    """What one client is sent: arrays (several models under key prefixes, or a record made
    already) and config entries."""

    arrays: Params | ArrayRecord
    extras: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Request:
    """One exchange of one strategy: the message type, and each client's payload."""

    message_type: str
    payloads: Mapping[int, Payload]


class Algorithm(ABC):
    """The server half of a strategy. A subclass implements the five abstract hooks (what a
    client is sent to train and to evaluate, how updates fold into the state, and the state's
    checkpoint round trip); the other hooks have FedAvg's shape and are overridden where a
    strategy differs (e.g. centralized and the Flower built-ins replace `train_request`)."""

    train_message = train_type()
    evaluate_message = evaluate_type()

    def __init__(self, setup: ServerSetup) -> None:
        self.setup = setup
        self.config = setup.config
        self.clients = setup.clients
        self.shapes = {k: v.shape for k, v in setup.initial.items()}

    # -- the pure hooks ------------------------------------------------------------------------
    @abstractmethod
    def train_payload(self, server_round: int, client: int) -> Payload:
        """What client index `client` is sent to train in `server_round`: the model(s) it trains
        and any config entries its handler reads. Called once per reachable client per round,
        by `train_request`, before any of that round's replies are in."""

    def train_message_for(self, server_round: int) -> str:
        """The message type of this round's training (and so the client handler that runs)."""
        return self.train_message

    def check_update(self, server_round: int, metrics: MetricRecord) -> str | None:
        """Why a training reply's metrics cannot be used (None: they can); beyond the shared checks."""
        return None

    @abstractmethod
    def aggregate(self, server_round: int, updates: Sequence[Update]) -> list[dict[str, Any]] | None:
        """Fold the round's usable updates (sorted by client; possibly none) into the state.
        Called once per round after the training replies are checked. Returns the clusters.csv
        rows of the clients that chose a cluster this round, or None when not clustered."""

    @abstractmethod
    def evaluate_payload(self, server_round: int, client: int) -> Payload:
        """What client index `client` is sent to evaluate the models of `server_round`: the
        model(s) it deploys (and, for personalized strategies, the global one). Called after that
        round's `aggregate`, once per reachable client."""

    def read_evaluation(self, metrics: MetricRecord, prefix: str = "") -> dict[str, Evaluation]:
        """One client's evaluation reply, per model tag; `prefix` selects a split's entries."""
        return {"deployed": metrics_to_evaluation(metrics, prefix)}

    def read_evaluations(self, metrics: MetricRecord) -> dict[str, Evaluation]:
        """Test evaluations by model tag, plus validation ones under `VAL_TAG` tags when present."""
        out = self.read_evaluation(metrics)
        if f"{VAL_PREFIX}n" in metrics:
            out.update({VAL_TAG + tag: e for tag, e in self.read_evaluation(metrics, VAL_PREFIX).items()})
        return out

    def clusters(self) -> dict[int, int]:
        """Client index -> cluster whose model it deploys (empty: not clustered)."""
        return {}

    @abstractmethod
    def state(self) -> tuple[Params, dict[str, Any]]:
        """Everything the next round depends on, for the checkpoint written after each completed
        round: the arrays, and JSON-able state naming clients by label (not index), so that
        `restore` on a fresh instance continues the run exactly."""

    @abstractmethod
    def restore(self, arrays: Params, state: Mapping[str, Any]) -> None:
        """Load what `state` returned into a freshly built instance; called once, on resume,
        before the first round the resumed run trains."""

    # -- the phases: what an exchange sends, then what its replies make ----------------------
    def train_request(self, server_round: int, clients: Sequence[int]) -> Request | None:
        """What the round's training exchange sends the reachable `clients` (None: nothing)."""
        return Request(self.train_message_for(server_round), {c: self.train_payload(server_round, c) for c in clients})

    def train_done(self, server_round: int, replies: Sequence[Message], health: RoundHealth) -> list[dict[str, Any]] | None:
        """Aggregate the usable training replies; the clusters.csv rows (strategies/loop.py sends)."""
        updates = usable_updates(replies, self.shapes, self.clients, health, lambda m: self.check_update(server_round, m))
        health.model_kept = not updates
        return self.aggregate(server_round, updates)

    def evaluate_request(self, server_round: int, clients: Sequence[int]) -> Request:
        """What the evaluation exchange sends the reachable `clients`: each its `evaluate_payload`."""
        return Request(self.evaluate_message, {c: self.evaluate_payload(server_round, c) for c in clients})

    def evaluate_done(self, server_round: int, replies: Sequence[Message], health: RoundHealth) -> list[dict[str, Evaluation]]:
        """The usable evaluation replies, per client, by model tag (unusable ones are counted)."""
        return usable_evaluations(replies, self.read_evaluations, self.clients, health)


@dataclass(frozen=True)
class StrategySpec:
    """One strategy: its name and docs/strategies.md line, its own settings, its two halves, its study settings."""

    name: str
    summary: str
    server: Callable[[ServerSetup], Algorithm]
    settings: type | None = None
    handlers: Mapping[str, Handler] = field(default_factory=dict)
    study: Mapping[str, Any] = field(default_factory=dict)
    personalized: bool = False  # each client deploys its own or its cluster's model
