"""Local training only: the baseline with no collaboration at all.

Every client trains its own model on its own data, from the run's seeded initial model, with
the same per-round budget as FedAvg (`lr`, `local-epochs`), and deploys it. Nothing is
averaged; the server only keeps each client's model between rounds. A client that fails a
round (or sends an unusable update) keeps its previous model.

Why the per-client models live on the server and travel with every message, rather than in
the ClientApp's `Context.state`: that state is lost when a SuperNode restarts (the deployment
engine starts a fresh ClientApp process per message and keeps `Context` only in the running
SuperNode), and a resumed run gets new nodes with empty contexts. The server's checkpoint
already saves every strategy's state after every round, so a model kept there survives both,
and a resumed run continues exactly. The cost is one model (about 13 kB) per client per
message, which the loop sends anyway.

The client side is FedAvg's plain `train` and `evaluate` handlers: training the received
model on the client's data is exactly local training when the received model is its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from core.params import Params
from strategies.algorithm import Algorithm, Payload, ServerSetup, StrategySpec
from strategies.fedavg import HANDLERS as FEDAVG_HANDLERS
from strategies.replies import Update


def client_prefix(label: str) -> str:
    """A client's key prefix in a checkpoint's flat arrays (its label: a state or `XX-j`)."""
    return f"{label}."


def keep_or_replace(personal: Mapping[int, Params], updates: Mapping[int, Params]) -> dict[int, Params]:
    """Each client's new own model: its update if it sent a usable one, else its previous model."""
    return {client: updates.get(client, model) for client, model in personal.items()}


def personal_arrays(personal: Mapping[int, Params], clients: Sequence[str], prefix: str = "") -> Params:
    """Every client's model in one flat dict, under `prefix` + its label's prefix."""
    return {f"{prefix}{client_prefix(clients[c])}{key}": value
            for c, model in sorted(personal.items()) for key, value in model.items()}


def one_model(arrays: Params, prefix: str) -> Params:
    """The model stored under `prefix` in a flat dict of several, the prefix stripped."""
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


def personal_from_arrays(arrays: Params, clients: Sequence[str], prefix: str = "") -> dict[int, Params]:
    """The inverse of `personal_arrays`."""
    return {c: one_model(arrays, f"{prefix}{client_prefix(label)}") for c, label in enumerate(clients)}


class Local(Algorithm):
    """One model per client, all starting from the seeded initial model; no aggregation."""

    def __init__(self, setup: ServerSetup) -> None:
        super().__init__(setup)
        initial = setup.initial
        self.personal: dict[int, Params] = {c: initial for c in range(len(self.clients))}

    def train_payload(self, server_round: int, client: int) -> Payload:
        return Payload(self.personal[client])

    def evaluate_payload(self, server_round: int, client: int) -> Payload:
        return Payload(self.personal[client])

    def aggregate(self, server_round: int, updates: Sequence[Update]) -> None:
        self.personal = keep_or_replace(self.personal, {u.client_index: u.params for u in updates})

    def state(self) -> tuple[Params, dict[str, Any]]:
        return personal_arrays(self.personal, self.clients), {}

    def restore(self, arrays: Params, state: Mapping[str, Any]) -> None:
        self.personal = personal_from_arrays(arrays, self.clients)


SPEC = StrategySpec(
    name="local",
    summary=("no collaboration: every client trains its own model on its own data from the seeded initial model "
             "and deploys it; nothing is averaged"),
    server=Local,
    handlers=FEDAVG_HANDLERS,
    study={"lr": 0.001, "local-epochs": 10},
)
