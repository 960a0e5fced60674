"""The round loop: Flower messaging between the server halves of a federation's replicates and its clients.

A replicate is one (strategy, settings, seed); a single run is a federation of one. Every round
the loop learns which node serves which client, asks every replicate's algorithm what it sends,
sends each client one message carrying all of it, hands each replicate its own replies, and
returns each replicate's round as a `RoundResult` for its recorder.

One exchange per round: the message of round r carries, per replicate, the evaluation of round
r-1's model and the training of round r; the client evaluates, then trains. So round r-1's
result is complete when round r's replies come, and one evaluate-only exchange closes the run.
Each part is computed from the algorithm's state exactly as in a round of its own, so the
results files do not change; but a client that fails as a whole (no reply, its node gone) now
loses round r-1's evaluation together with round r's training. The map is rebuilt from scratch in
every new ServerApp process, so a resumed run, whose nodes have new ids, finds its clients
again. A node that vanished is dropped from the map and its client counts as failed for the
round; the round goes on with the others. A restarted SuperNode (new node id) is identified
like any new node and takes its client back, with the server's state for that client, once
the old node has vanished.

Identify rides in the round's message (round 1, and a round in which a node restarted) when that
is exact: as many unknown nodes as clients without a node (the free clients), with `node-states`
each bound to a free client's state, and every request of the exchange giving every free client
the same payload (same arrays and config: FedAvg-like strategies, every strategy's round 1, one
restarted node). Each unknown node then gets an `identify` part per replicate plus that payload;
its reply names its client, which maps the node (through the same checks as a separate identify)
and makes its parts that client's replies. A folded node that fails fails its client for every
replicate in the message, as any failed client, and is asked again next round; one that names
no client of the run, or is refused, has its replies not used. In every other case (payloads
that differ per client, more or fewer unknown nodes than free clients, a node-states binding
that would refuse, nothing to send the free clients, e.g. centralized's training rounds) the
unknown nodes are asked in an `identify` exchange of their own first, as before.

Who may serve a client: one live node at a time (a second node claiming a client that a live
node serves is refused until that node vanishes), and, with `node-states` (SuperNode
authentication on), only a node bound to the client's state. A refused node is sent nothing
more (though a folded one did its round's work, unused) and counted in the round's
`refused_nodes`; a reply naming another client than its node's is not used. Without
`node-states` a node's identity is what its node-config declares.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from logging import ERROR, WARNING
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.common.constant import ErrorCode
from flwr.common.logger import log
from flwr.serverapp import Grid

from clients.shards import client_ids
from clients.sources import Source
from core.bundle import Part, pack, split_reply
from core.params import Params, to_record
from core.rounds import RoundHealth, RoundResult
from core.wire import CLIENT_KEY, IDENTIFY, ROUND_KEY, SIZES_KEY
from strategies.algorithm import Algorithm, Payload, Request

EXPIRED = (ErrorCode.MESSAGE_UNAVAILABLE, ErrorCode.REPLY_MESSAGE_UNAVAILABLE)  # the SuperLink's TTL replies
EVALUATE, TRAIN = "e", "t"  # suffixes of a replicate's tag for its two parts of an exchange
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


@dataclass(frozen=True)
class Member:
    """A replicate as the loop sees it: its tag, the run-config keys in which it differs from the
    federation's (sent with its payloads), its server half, and its quorum (`min-clients`)."""

    tag: str
    algorithm: Algorithm
    run: Mapping[str, Any] = field(default_factory=dict)
    quorum: int = 1


class Exchange:
    """One federation's messaging: the node-to-client map, and every replicate's payloads to a
    client packed into one message (core/bundle.py), its reply split back per replicate.

    `timeout_s` bounds every exchange (identify, train, evaluate): a client that has not
    replied by then is failed for it, and its message expires. A failed or silent client so
    fails for every replicate its message carried. `bindings` maps node ids to the states they
    may serve (`node-states`; empty: not checked).
    """

    def __init__(self, grid: Grid, source: Source, num_clients: int, *, timeout_s: float = DEFAULT_TIMEOUT_S,
                 bindings: Mapping[int, str] | None = None) -> None:
        self.grid = grid
        self.source_entries = source_config(source)
        self.num_clients = num_clients
        self.client_ids = client_ids(source.states, max(1, num_clients // max(1, len(source.states))))
        self.timeout_s = timeout_s
        self.bindings = dict(bindings or {})
        self.node_client: dict[int, int] = {}
        self.sizes: dict[str, dict[int, list[int]]] = {}  # replicate -> client -> records in train, test, val
        self.refused: set[int] = set()  # nodes refused since the round began
        self.silent: set[int] = set()  # nodes that let an exchange of this round time out

    def message_config(self, server_round: int) -> dict[str, Any]:
        return {ROUND_KEY: server_round, **self.source_entries}

    def forget(self, new_round: bool) -> list[int]:
        """Start an exchange: forget vanished nodes, and in a new round the last one's refused and
        silent nodes. The live nodes not mapped yet (none silent this round), oldest first."""
        if new_round:
            self.refused, self.silent = set(), set()
        live = {node.node_id: node.last_activated_at for node in self.grid.get_nodes()}
        self.node_client = {n: c for n, c in self.node_client.items() if n in live}
        return sorted(set(live) - set(self.node_client) - self.silent, key=lambda n: (live[n], n))

    def free(self) -> list[int]:
        """The run's clients that no live node serves, in client order."""
        served = set(self.node_client.values())
        return [c for c in range(self.num_clients) if c not in served]

    def may_fold(self, unknown: Sequence[int], free: Sequence[int]) -> bool:
        """Whether the unknown nodes could be the free clients' (one each; with `node-states`, each
        bound to a free client's state), so that asking them in the round's message is worth a try."""
        if len(unknown) != len(free):
            return False
        states = {self.client_ids[c].state for c in free}
        return not self.bindings or all(self.bindings.get(n) in states for n in unknown)

    def fold(self, unknown: Sequence[int], free: Sequence[int], outgoing: Sequence[Outgoing],
             asks: Sequence[tuple[Member, int]]) -> Fold | None:
        """Identify riding in the exchange's message, for unknown nodes that `may_fold`, when that is
        exact: every request that goes out gives every free client the same payload, so a node's
        message does not depend on which of them it serves (None: it does, or nothing goes out to
        carry the question)."""
        if not unknown:
            return None
        requests = [o.request for o in outgoing if o.request is not None]
        if not requests:
            return None
        if not all(all(c in r.payloads and same_payload(r.payloads[c], r.payloads[free[0]]) for c in free)
                   for r in requests):
            return None
        return Fold(tuple(unknown), free[0], tuple(identify_parts(asks)))

    def identify(self, unknown: Sequence[int], asks: Sequence[tuple[Member, int]]) -> None:
        """Ask the unknown nodes (oldest first), in an exchange of its own, which client they serve,
        and each replicate's split sizes there."""
        parts = identify_parts(asks)
        _, content = pack(self.message_config(max(r for _, r in asks)), parts)
        questions = {n: Message(content, dst_node_id=n, message_type=IDENTIFY, ttl=self.timeout_s) for n in unknown}
        order = {n: i for i, n in enumerate(unknown)}
        replies = self.grid.send_and_receive(list(questions.values()), timeout=self.timeout_s)
        for reply in sorted(replies, key=lambda r: order.get(r.metadata.src_node_id, len(order))):
            node = reply.metadata.src_node_id
            if reply.has_error():
                log(WARNING, "node %s did not say which client it serves: %s", node, reply.error.reason[:300])
                continue
            client = self.claimed(reply)
            if client is None or not self.admit(node, client):
                continue
            self.node_client[node] = client
            self.keep_sizes(client, split_reply(reply, questions[node], [p.tag for p in parts]))

    def keep_sizes(self, client: int, answers: Mapping[str, Message]) -> None:
        """Each replicate's split sizes at `client`, from its answers to identify (by tag)."""
        for tag, answer in answers.items():
            sizes = None if answer.has_error() else answer.content["metrics"].get(SIZES_KEY)
            if sizes is not None:
                self.sizes.setdefault(tag, {})[client] = [int(n) for n in sizes]

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

    def send(self, outgoing: Sequence[Outgoing], fold: Fold | None = None) -> dict[str, list[Message]]:
        """Every part for a client in one message to its node, and with `fold` the identify parts
        and the free clients' payloads to each unknown node; each part's replies, by its tag (a
        folded node's as its client's, once it is admitted). Equal arrays are encoded once."""
        records: dict[int, ArrayRecord] = {}
        sent: dict[int, tuple[Message, list[str]]] = {}
        targets = [(node, client, ()) for node, client in sorted(self.node_client.items(), key=lambda item: item[1])]
        targets += [(node, fold.client, fold.parts) for node in fold.nodes] if fold else []
        for node, client, asked in targets:
            parts = []
            for out in outgoing:
                if out.request is None or client not in out.request.payloads:
                    continue
                payload = out.request.payloads[client]
                arrays = records.get(id(payload.arrays))
                if arrays is None:
                    arrays = records[id(payload.arrays)] = (
                        payload.arrays if isinstance(payload.arrays, ArrayRecord) else to_record(payload.arrays))
                config = ConfigRecord({**self.message_config(out.server_round), **payload.extras})
                parts.append(Part(out.tag, out.request.message_type, RecordDict({"arrays": arrays, "config": config}),
                                  out.run))
            if parts:
                parts = [*asked, *parts]
                message_type, content = pack(self.message_config(max(o.server_round for o in outgoing)), parts)
                message = Message(content, dst_node_id=node, message_type=message_type, ttl=self.timeout_s)
                sent[node] = (message, [p.tag for p in parts])
        replies: dict[str, list[Message]] = {out.tag: [] for out in outgoing}
        received = self.send_messages([message for message, _ in sent.values()], fold.nodes if fold else ())
        by_id = {m.metadata.message_id: (m, tags) for m, tags in sent.values() if m.metadata.message_id}
        for reply in received:  # an error reply made by the SuperLink comes from its own node id
            message, tags = by_id.get(reply.metadata.reply_to_message_id) or sent[reply.metadata.src_node_id]
            answers = split_reply(reply, message, tags)
            asked = {tag: answers.pop(tag) for tag in list(answers) if tag not in replies}
            if asked and not reply.has_error():
                self.keep_sizes(self.node_client[reply.metadata.src_node_id], asked)
            for tag, answer in answers.items():
                replies[tag].append(answer)
        return replies

    def send_messages(self, messages: Iterable[Message], folded: Sequence[int] = ()) -> list[Message]:
        """Messages to mapped nodes and the `folded` unknown ones only (a built-in strategy addresses
        every live node); their replies within the timeout, minus those naming another client than
        their node serves. A folded node's reply maps it to the client it names, oldest node first,
        if `admit` lets it; else the reply is not used.

        A node that let an exchange time out is sent nothing more this round: a Flower 1.42
        SuperNode handles one message at a time, so it is still busy with the one it did not answer.
        A pull just past the message's TTL gives the SuperLink's "expired" error reply instead of
        nothing; that is a timeout too.
        """
        order = {n: i for i, n in enumerate(folded)}
        outgoing = [m for m in messages if (m.metadata.dst_node_id in self.node_client or m.metadata.dst_node_id in order)
                    and m.metadata.dst_node_id not in self.silent]
        received = list(self.grid.send_and_receive(outgoing, timeout=self.timeout_s)) if outgoing else []
        answered = {m.metadata.reply_to_message_id for m in received
                    if not (m.has_error() and m.error.code in EXPIRED)}
        self.silent |= {m.metadata.dst_node_id for m in outgoing if m.metadata.message_id not in answered}
        named = [r for r in received if not r.has_error() and r.metadata.src_node_id in order]
        for reply in sorted(named, key=lambda r: order[r.metadata.src_node_id]):
            node, client = reply.metadata.src_node_id, self.claimed(reply)
            if client is not None and self.admit(node, client):
                self.node_client[node] = client
        replies = []
        for reply in received:
            node, served = reply.metadata.src_node_id, self.node_client.get(reply.metadata.src_node_id)
            if reply.has_error():
                replies.append(reply)
            elif node in order and served is None:
                continue  # a folded node that named no client of the run, or was refused
            elif self.claimed(reply) != served:
                who = f"client {self.client_ids[served].label}" if served is not None else "no client"
                self.refuse(node, f"node {node} serves {who} but its reply names another client; the reply is not used")
            else:
                replies.append(reply)
        return replies


@dataclass(frozen=True)
class Fold:
    """Identify riding in an exchange's message: the unknown nodes (oldest first), the free client
    whose payloads each is sent (every free client's are the same), and the identify parts."""

    nodes: tuple[int, ...]
    client: int
    parts: tuple[Part, ...]


def identify_parts(asks: Sequence[tuple[Member, int]]) -> list[Part]:
    """One identify question per replicate, under its own tag, for the round it is in."""
    return [Part(m.tag, IDENTIFY, RecordDict({"config": ConfigRecord({ROUND_KEY: r})}), m.run) for m, r in asks]


def same_payload(a: Payload, b: Payload) -> bool:
    """Whether two payloads send the same bytes: the same arrays (one object, or equal keys, dtypes,
    shapes and bytes) and equal config entries."""
    if a is b:
        return True
    if dict(a.extras) != dict(b.extras):
        return False
    if a.arrays is b.arrays:
        return True
    x, y = (arrays if isinstance(arrays, ArrayRecord) else to_record(arrays) for arrays in (a.arrays, b.arrays))
    return list(x) == list(y) and all(
        (x[k].dtype, x[k].shape, x[k].stype, x[k].data) == (y[k].dtype, y[k].shape, y[k].stype, y[k].data) for k in x)


@dataclass(frozen=True)
class Outgoing:
    """One part of an exchange: a replicate's request for one round, under its own tag."""

    tag: str
    run: Mapping[str, Any]
    server_round: int
    request: Request | None


@dataclass
class Trained:
    """A replicate's round whose training is done and whose evaluation comes with the next exchange:
    what it chose and how it went, and the algorithm's state after it (for its checkpoint)."""

    server_round: int
    health: RoundHealth
    choices: list[dict[str, Any]] | None
    clusters: dict[int, int]
    arrays: Params
    state: dict[str, Any]


@dataclass(frozen=True)
class Step:
    """What one replicate does in an exchange: train a round (None: none), evaluate a trained one."""

    member: Member
    train_round: int | None = None
    evaluate: Trained | None = None


def step(steps: Sequence[Step], exchange: Exchange) -> list[tuple[RoundResult | None, Trained | None]]:
    """One exchange for every replicate: each client evaluates the model of the round trained last,
    then trains this round's, in one message. Per step, the evaluated round as a value and the
    round just trained (whose evaluation comes with the next exchange).

    Unknown nodes are asked which client they serve in the same message when that is exact
    (`Exchange.fold`): the requests are then made for the mapped clients and the free ones, as
    they would be once every node had answered. Otherwise they are asked in an exchange of their
    own first; a request made before that gives the clients found no other payload (a client's
    payload does not depend on which others are reachable), and send skips clients without a node."""
    if not steps:
        return []
    asks = [(s.member, s.train_round or s.evaluate.server_round) for s in steps]
    unknown = exchange.forget(new_round=any(s.train_round is not None for s in steps))
    free = exchange.free()
    if unknown and not exchange.may_fold(unknown, free):
        exchange.identify(unknown, asks)
        unknown = []
    clients = sorted({*exchange.clients(), *free}) if unknown else exchange.clients()
    outgoing = []
    for s in steps:
        algorithm, tag = s.member.algorithm, s.member.tag
        if s.evaluate is not None:
            r = s.evaluate.server_round
            outgoing.append(Outgoing(f"{tag}{EVALUATE}", s.member.run, r, algorithm.evaluate_request(r, clients)))
        if s.train_round is not None:
            r = s.train_round
            outgoing.append(Outgoing(f"{tag}{TRAIN}", s.member.run, r, algorithm.train_request(r, clients)))
    fold = exchange.fold(unknown, free, outgoing, asks)
    if unknown and fold is None:
        exchange.identify(unknown, asks)
    replies = exchange.send(outgoing, fold)
    out = []
    for s in steps:
        algorithm, tag, result, trained = s.member.algorithm, s.member.tag, None, None
        if s.evaluate is not None:
            done = s.evaluate
            evaluated = algorithm.evaluate_done(done.server_round, replies[f"{tag}{EVALUATE}"], done.health)
            result = RoundResult(done.server_round, evaluated, done.clusters, done.choices, done.health)
        if s.train_round is not None:
            health = RoundHealth(quorum=s.member.quorum)
            choices = algorithm.train_done(s.train_round, replies[f"{tag}{TRAIN}"], health)
            health.refused_nodes = len(exchange.refused)
            arrays, state = algorithm.state()
            trained = Trained(s.train_round, health, choices, dict(algorithm.clusters()),
                              {k: np.array(v, copy=True) for k, v in arrays.items()}, copy.deepcopy(dict(state)))
        out.append((result, trained))
    return out
