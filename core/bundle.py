"""The wire format of a bundle: one message to a client carries one sub-payload per replicate.

A replicate is one (strategy, settings, seed) of a federation that trains several at once. Its
sub-payload is the RecordDict its strategy alone would send (`arrays`, `config`), stored under
its tag (`r0/arrays`, `r0/config`), plus `r0/run`: the run-config keys in which the replicate
differs from the federation's run config. The top-level `config` record holds what all share
(the data source) and names the tags and their message types (`replicates`, `replicate-types`).
A reply has the same shape: each replicate's `metrics` and `arrays` under its tag, or
`r0/error` when its handler raised, and a top-level `metrics` naming the client.

So a strategy's handler on the client, and its server half reading replies, see exactly the
records of a run of their own, whichever replicates share the message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from flwr.app import ConfigRecord, Error, Message, MetricRecord, RecordDict
from flwr.common.constant import ErrorCode

from core.wire import IDENTIFY

TAGS_KEY = "replicates"  # top-level config: the replicates' tags, in order
TYPES_KEY = "replicate-types"  # top-level config: each replicate's message type
RUN = "run"  # a replicate's run-config keys that differ from the federation's
ERROR = "error"  # a replicate's failed handler: its error code and reason
MIXED = "replicates"  # the name part of a bundle's message type when its replicates' types differ


def tag_of(index: int) -> str:
    return f"r{index}"


def sub_key(tag: str, name: str) -> str:
    return f"{tag}/{name}"


@dataclass(frozen=True)
class Part:
    """One replicate's share of a message: its tag, message type, records, and run-config keys."""

    tag: str
    message_type: str
    content: RecordDict
    run: Mapping[str, Any]


def bundle_type(types: Sequence[str]) -> str:
    """A bundle's message type, named by the work it asks for: an identify question riding along
    (strategies/loop.py) does not count unless it is all there is. Its replicates' common type,
    else `train.replicates` when any trains (so a node busy training is known to be), else
    `evaluate.replicates`."""
    types = [t for t in types if t != IDENTIFY] or list(types)
    if len(set(types)) == 1:
        return types[0]
    kind = "train" if any(t.startswith("train") for t in types) else "evaluate"
    return f"{kind}.{MIXED}"


def pack(shared: Mapping[str, Any], parts: Sequence[Part]) -> tuple[str, RecordDict]:
    """A bundle's message type and content."""
    content = RecordDict({"config": ConfigRecord({
        **shared, TAGS_KEY: [p.tag for p in parts], TYPES_KEY: [p.message_type for p in parts]})})
    for part in parts:
        for name, record in part.content.items():
            content[sub_key(part.tag, name)] = record
        content[sub_key(part.tag, RUN)] = ConfigRecord(dict(part.run))
    return bundle_type([p.message_type for p in parts]), content


def unpack(content: RecordDict) -> list[Part]:
    """The parts of a bundle; each part's `config` holds the shared entries under its own."""
    shared = dict(content["config"])
    tags, types = list(shared.pop(TAGS_KEY)), list(shared.pop(TYPES_KEY))
    parts = []
    for tag, message_type in zip(tags, types):
        prefix = sub_key(tag, "")
        own = RecordDict({k[len(prefix):]: v for k, v in content.items() if k.startswith(prefix)})
        run = dict(own.pop(RUN)) if RUN in own else {}
        config = dict(own["config"]) if "config" in own else {}
        own["config"] = ConfigRecord({**shared, **config})
        parts.append(Part(tag, message_type, own, run))
    return parts


def pack_reply(client_key: str, client: int, replies: Mapping[str, RecordDict | Error]) -> RecordDict:
    """A bundle's reply content: each replicate's records or error under its tag."""
    content = RecordDict({"metrics": MetricRecord({client_key: client})})
    for tag, reply in replies.items():
        if isinstance(reply, Error):
            content[sub_key(tag, ERROR)] = ConfigRecord({"code": int(reply.code), "reason": str(reply.reason)})
            continue
        for name, record in reply.items():
            content[sub_key(tag, name)] = record
    return content


def split_reply(reply: Message, request: Message, tags: Sequence[str]) -> dict[str, Message]:
    """A bundle's reply as one reply per replicate, each as if answering a message of its own. An
    error reply (the client failed or its node vanished) is every replicate's error."""
    if reply.has_error():
        return {tag: Message(Error(reply.error.code, reply.error.reason), reply_to=request) for tag in tags}
    out = {}
    for tag in tags:
        prefix = sub_key(tag, "")
        own = {k[len(prefix):]: v for k, v in reply.content.items() if k.startswith(prefix)}
        if ERROR in own:
            error = own[ERROR]
            out[tag] = Message(Error(int(error["code"]), str(error["reason"])), reply_to=request)
        elif own:
            out[tag] = Message(RecordDict(own), reply_to=request)
        else:
            reason = f"the reply holds nothing for replicate {tag}"
            out[tag] = Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason), reply_to=request)
    return out
