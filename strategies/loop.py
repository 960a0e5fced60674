"""The round loop: Flower messaging between the server half of a strategy and its clients.

Every round the loop learns which node serves which client (a node it does not know yet is
asked with an `identify` query), lets the algorithm train and evaluate over that map, and
returns the round as a `RoundResult` for the recorder. The map is rebuilt from scratch in
every new ServerApp process, so a resumed run, whose nodes have new ids, finds its clients
again. A node that vanished is dropped from the map and its client counts as failed for the
round; the round goes on with the others. A restarted SuperNode (new node id) is identified
like any new node and takes its client back, with the server's state for that client, once
the old node has vanished.

Who may serve a client: one live node at a time (a second node claiming a client that a live
node serves is refused until that node vanishes), and, with `node-states` (SuperNode
authentication on), only a node bound to the client's state. A refused node is sent nothing
and counted in the round's `refused_nodes`; a reply naming another client than its node's is
not used. Without `node-states` a node's identity is what its node-config declares.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from logging import ERROR, WARNING
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.common.constant import ErrorCode
from flwr.common.logger import log
from flwr.serverapp import Grid

from clients.shards import client_ids
from clients.sources import Source
from core.params import to_record
from core.rounds import RoundHealth, RoundResult
from core.wire import CLIENT_KEY, IDENTIFY, ROUND_KEY, SIZES_KEY
from strategies.algorithm import Algorithm, Payload

EXPIRED = (ErrorCode.MESSAGE_UNAVAILABLE, ErrorCode.REPLY_MESSAGE_UNAVAILABLE)  # the SuperLink's TTL replies
DEFAULT_TIMEOUT_S = 600.0  # `round-timeout`'s default: the longest wait for one exchange's replies


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
    """One run's messaging: the node-to-client map and per-client payloads over the grid.

    `timeout_s` bounds every exchange (identify, train, evaluate): a client that has not
    replied by then is failed for it, and its message expires. `quorum` is the number of
    usable training updates a round needs (`min-clients`); `bindings` maps node ids to the
    states they may serve (`node-states`; empty: not checked).
    """

    def __init__(self, grid: Grid, source: Source, num_clients: int, *, timeout_s: float = DEFAULT_TIMEOUT_S,
                 quorum: int = 1, bindings: Mapping[int, str] | None = None) -> None:
        self.grid = grid
        self.source_entries = source_config(source)
        self.num_clients = num_clients
        self.client_ids = client_ids(source.states, max(1, num_clients // max(1, len(source.states))))
        self.timeout_s = timeout_s
        self.quorum = quorum
        self.bindings = dict(bindings or {})
        self.node_client: dict[int, int] = {}
        self.sizes: dict[int, list[int]] = {}  # client -> records in its train, test, val splits
        self.refused: set[int] = set()  # nodes refused since the round began
        self.silent: set[int] = set()  # nodes that let an exchange of this round time out

    def message_config(self, server_round: int) -> dict[str, Any]:
        return {ROUND_KEY: server_round, **self.source_entries}

    def refresh(self, server_round: int) -> None:
        """Forget vanished nodes and ask new ones (oldest first) which client they serve."""
        self.refused, self.silent = set(), set()
        live = {node.node_id: node.last_activated_at for node in self.grid.get_nodes()}
        self.node_client = {n: c for n, c in self.node_client.items() if n in live}
        unknown = sorted(set(live) - set(self.node_client), key=lambda n: (live[n], n))
        if not unknown:
            return
        config = ConfigRecord(self.message_config(server_round))
        asks = [Message(RecordDict({"config": config}), dst_node_id=n, message_type=IDENTIFY, ttl=self.timeout_s)
                for n in unknown]
        order = {n: i for i, n in enumerate(unknown)}
        replies = self.grid.send_and_receive(asks, timeout=self.timeout_s)
        for reply in sorted(replies, key=lambda r: order.get(r.metadata.src_node_id, len(order))):
            node = reply.metadata.src_node_id
            if reply.has_error():
                log(WARNING, "node %s did not say which client it serves: %s", node, reply.error.reason[:300])
                continue
            client = self.claimed(reply)
            if client is None or not self.admit(node, client):
                continue
            self.node_client[node] = client
            sizes = reply.content["metrics"].get(SIZES_KEY)
            if sizes is not None:
                self.sizes[client] = [int(n) for n in sizes]

    def claimed(self, reply: Message) -> int | None:
        """The client a reply names, if it is one of the run's."""
        try:
            client = int(reply.content["metrics"][CLIENT_KEY])
        except (KeyError, TypeError, ValueError):
            client = -1
        if 0 <= client < self.num_clients:
            return client
        log(WARNING, "node %s names no client of this run; ignored", reply.metadata.src_node_id)
        return None

    def admit(self, node: int, client: int) -> bool:
        """Whether `node` may serve `client`: bound to its state (with node-states), and no other
        live node serves it already. A refusal is logged and counted."""
        claim = self.client_ids[client]
        if self.bindings:
            bound = self.bindings.get(node)
            if bound != claim.state:
                binding = f"node-states binds it to state {bound}" if bound else "node-states binds no state to it"
                return self.refuse(node, f"node {node} claims state {claim.state} (client {claim.label}) but "
                                         f"{binding}; refused, its replies are not used")
        holder = next((n for n, c in self.node_client.items() if c == client and n != node), None)
        if holder is not None:
            return self.refuse(node, f"nodes {holder} and {node} both claim client {claim.label}; the newer node "
                                     f"{node} is refused and its replies are not used while node {holder} is live")
        return True

    def refuse(self, node: int, why: str) -> bool:
        log(ERROR, "%s", why)
        self.refused.add(node)
        return False

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
                                    message_type=message_type, ttl=self.timeout_s))
        return self.send_messages(messages)

    def send_messages(self, messages: Iterable[Message]) -> list[Message]:
        """Messages to mapped nodes only (a built-in strategy addresses every live node); their replies
        within the timeout, minus those naming another client than their node serves.

        A node that let an exchange time out is sent nothing more this round: a Flower 1.42
        SuperNode handles one message at a time, so it is still busy with the one it did not answer.
        A pull just past the message's TTL gives the SuperLink's "expired" error reply instead of
        nothing; that is a timeout too.
        """
        outgoing = [m for m in messages if m.metadata.dst_node_id in self.node_client
                    and m.metadata.dst_node_id not in self.silent]
        received = list(self.grid.send_and_receive(outgoing, timeout=self.timeout_s)) if outgoing else []
        answered = {m.metadata.reply_to_message_id for m in received
                    if not (m.has_error() and m.error.code in EXPIRED)}
        self.silent |= {m.metadata.dst_node_id for m in outgoing if m.metadata.message_id not in answered}
        replies = []
        for reply in received:
            node, served = reply.metadata.src_node_id, self.node_client.get(reply.metadata.src_node_id)
            if not reply.has_error() and self.claimed(reply) != served:
                who = f"client {self.client_ids[served].label}" if served is not None else "no client"
                self.refuse(node, f"node {node} serves {who} but its reply names another client; the reply is not used")
                continue
            replies.append(reply)
        return replies


def run_round(algorithm: Algorithm, exchange: Exchange, server_round: int) -> RoundResult:
    """Train, then evaluate; the round as a value."""
    health = RoundHealth(quorum=exchange.quorum)
    exchange.refresh(server_round)
    choices = algorithm.train_round(server_round, exchange, health)
    evaluations = algorithm.evaluate_round(server_round, exchange, health)
    health.refused_nodes = len(exchange.refused)
    return RoundResult(server_round, evaluations, algorithm.clusters(), choices, health)
