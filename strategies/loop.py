"""The round loop: Flower messaging between the server half of a strategy and its clients.

Every round the loop learns which node serves which client (a node it does not know yet is
asked with an `identify` query; every reply names its client too), lets the algorithm train
and evaluate over that map, and returns the round as a `RoundResult` for the recorder. The
map is rebuilt from scratch in every new ServerApp process, so a resumed run, whose nodes
have new ids, finds its clients again. A node that vanished is dropped from the map and its
client counts as failed for the round; the round goes on with the others.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from logging import WARNING
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid

from clients.sources import Source
from core.params import to_record
from core.rounds import RoundHealth, RoundResult
from core.wire import CLIENT_KEY, IDENTIFY, ROUND_KEY, SIZES_KEY
from strategies.algorithm import Algorithm, Payload

REPLY_TIMEOUT_S = 3600.0  # Flower's default wait for a round's replies


class FederationSizeError(ValueError):
    """The number of SuperNodes does not match the number of clients (states x clients-per-state)."""


def check_federation_size(node_ids: list[int], states: tuple[str, ...], shards: int = 1) -> None:
    clients = len(states) * shards
    if len(node_ids) != clients:
        per_state = "" if shards == 1 else f" x {shards} clients-per-state = {clients} clients"
        raise FederationSizeError(
            f"the federation has {len(node_ids)} SuperNodes but the data has {len(states)} states "
            f"({','.join(states)}){per_state}; run with --federation-config \"num-supernodes={clients}\" "
            "or choose states with the 'states' config key"
        )


def source_config(source: Source) -> dict[str, Any]:
    """What every message carries besides models: the resolved data source."""
    return {"source-kind": source.kind, "source-path": source.path, "states": ",".join(source.states)}


class Exchange:
    """One run's messaging: the node-to-client map and per-client payloads over the grid."""

    def __init__(self, grid: Grid, source: Source, num_clients: int) -> None:
        self.grid = grid
        self.source_entries = source_config(source)
        self.num_clients = num_clients
        self.node_client: dict[int, int] = {}
        self.sizes: dict[int, list[int]] = {}  # client -> records in its train, test, val splits

    def message_config(self, server_round: int) -> dict[str, Any]:
        return {ROUND_KEY: server_round, **self.source_entries}

    def refresh(self, server_round: int) -> None:
        """Forget vanished nodes and ask new ones which client they serve."""
        live = set(self.grid.get_node_ids())
        self.node_client = {n: c for n, c in self.node_client.items() if n in live}
        unknown = sorted(live - set(self.node_client))
        if not unknown:
            return
        config = ConfigRecord(self.message_config(server_round))
        asks = [Message(RecordDict({"config": config}), dst_node_id=n, message_type=IDENTIFY) for n in unknown]
        for reply in self.grid.send_and_receive(asks, timeout=REPLY_TIMEOUT_S):
            if reply.has_error():
                log(WARNING, "node %s did not say which client it serves: %s", reply.metadata.src_node_id,
                    reply.error.reason[:300])
                continue
            self.learn(reply)
            sizes = reply.content["metrics"].get(SIZES_KEY)
            if sizes is not None and reply.metadata.src_node_id in self.node_client:
                self.sizes[self.node_client[reply.metadata.src_node_id]] = [int(n) for n in sizes]

    def learn(self, reply: Message) -> None:
        """Map the reply's node to the client it names."""
        try:
            client = int(reply.content["metrics"][CLIENT_KEY])
        except (KeyError, TypeError, ValueError):
            return
        if 0 <= client < self.num_clients:
            self.node_client[reply.metadata.src_node_id] = client

    def clients(self) -> list[int]:
        """The clients reachable this round, in client order."""
        return sorted(set(self.node_client.values()))

    def send(self, server_round: int, message_type: str, payloads: Mapping[int, Payload]) -> list[Message]:
        """Each reachable client's payload to its node; the replies. Equal arrays are encoded once."""
        records: dict[int, ArrayRecord] = {}
        messages = []
        for node, client in sorted(self.node_client.items(), key=lambda item: item[1]):
            payload = payloads[client]
            arrays = records.get(id(payload.arrays))
            if arrays is None:
                arrays = records[id(payload.arrays)] = to_record(payload.arrays)
            config = ConfigRecord({**self.message_config(server_round), **payload.extras})
            messages.append(Message(RecordDict({"arrays": arrays, "config": config}), dst_node_id=node,
                                    message_type=message_type))
        return self.send_messages(messages)

    def send_messages(self, messages: Iterable[Message]) -> list[Message]:
        replies = list(self.grid.send_and_receive(list(messages), timeout=REPLY_TIMEOUT_S))
        for reply in replies:
            if not reply.has_error():
                self.learn(reply)
        return replies


def run_round(algorithm: Algorithm, exchange: Exchange, server_round: int) -> RoundResult:
    """Train, then evaluate; the round as a value."""
    health = RoundHealth()
    exchange.refresh(server_round)
    choices = algorithm.train_round(server_round, exchange, health)
    evaluations = algorithm.evaluate_round(server_round, exchange, health)
    return RoundResult(server_round, evaluations, algorithm.clusters(), choices, health)
