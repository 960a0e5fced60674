"""Centralized training: the reference point of one model trained on all clients' data pooled.

Not a federated algorithm: the ServerApp reads every client's training split itself, with
the clients' own splits and encoding (`clients.data.state_data`, so under the `paper`
encoding each client's rows carry that client's standardization, exactly what it trains on
in the federated runs), concatenates them in client order and trains the MLP with the clients' own
SGD kernels (`clients.kernels.sparse_from_dense`: per-client standardization makes the pooled
rows dense), `local-epochs` passes over the pool per round. No training message is sent. The clients
evaluate the model through FedAvg's evaluate handler, so its rows compare with every other
strategy's state by state. The batch order is drawn from (seed, round) alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property

import numpy as np
from flwr.app import Message

from clients.data import ClientSplit, Split, state_data
from clients.kernels import SparseSplit, sparse_from_dense, train_sgd
from clients.shards import client_ids
from core.rounds import RoundHealth
from core.wire import evaluate_type
from strategies.algorithm import ServerSetup, StrategySpec
from strategies.fedavg import FedAvg, evaluate_received

CENTRAL_STREAM = 90  # seed word of the pooled batch order; no state's FIPS code (1..78), so no client's stream


def pooled_split(splits: Sequence[Split | ClientSplit]) -> Split:
    """The splits concatenated in the given order, inputs, labels and protected groups alike."""
    return Split(
        x=np.concatenate([s.x for s in splits]),
        y=np.concatenate([s.y for s in splits]),
        groups={a: np.concatenate([s.groups[a] for s in splits]) for a in splits[0].groups},
    )


def central_rng(seed: int, server_round: int) -> np.random.Generator:
    """The pooled training's batch order in one round: from (seed, round) only."""
    return np.random.default_rng([seed, CENTRAL_STREAM, server_round])


def client_train_splits(setup: ServerSetup) -> list[ClientSplit]:
    """Every client's training split, as its ClientApp builds it (clients/data.py), in client order."""
    config, source = setup.config, setup.source
    return [
        state_data(source, config.task, client, config.seed, config.synthetic_rows, config.synthetic_reversed,
                   config.encoding, config.train_rows, config.test_rows, config.val_rows).train
        for client in client_ids(source.states, config.clients_per_state)
    ]


class Centralized(FedAvg):
    """One model on the pooled training data; the clients only evaluate it."""

    @cached_property
    def pooled(self) -> SparseSplit:
        """Read at the first round, not when the run is validated (the pre-flight check builds this too)."""
        pool = pooled_split(client_train_splits(self.setup))
        return sparse_from_dense(pool.x, pool.y)

    def train_request(self, server_round: int, clients: Sequence[int]) -> None:
        """No training message goes to any client."""
        return None

    def train_done(self, server_round: int, replies: Sequence[Message], health: RoundHealth) -> None:
        """`local-epochs` SGD passes over the pooled data."""
        config = self.config
        pooled = self.pooled
        self.model, _ = train_sgd(self.model, pooled, lr=config.lr, epochs=config.local_epochs,
                                  batch_size=config.batch_size, rng=central_rng(config.seed, server_round))


SPEC = StrategySpec(
    name="centralized",
    summary=("reference point, not federated: the server trains one model on the pooled training splits of all "
             "clients, `local-epochs` passes per round; the clients only evaluate it"),
    server=Centralized,
    handlers={evaluate_type(): evaluate_received},
    study={"lr": 0.001, "local-epochs": 10},
)
