"""ClientApp: a state's client, or one shard of a state's (`clients-per-state`, clients/shards.py).

Thin wiring: every message type's handler comes from the strategy registry. A message carries
one part per replicate of the federation (core/bundle.py); this module turns each part into a
`ClientJob` (the replicate's config, this client's data, round, fault), runs the handler its
message type names, and packs every handler's `ClientReply` into Flower's reply, which always
names the client it comes from. A handler that raises fails its own replicate only.

With `fail-states`/`fail-prob` set, the chosen clients inject `fail-mode` in the chosen rounds
(raise in training or evaluation, return a corrupt update, or hang in training), deterministically
by seed.
"""

from __future__ import annotations

from functools import lru_cache

from flwr.app import ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode

from clients.data import SPLITS, state_data
from clients.job import ClientJob
from clients.local import UPDATE_FAULTS, corrupt_update, fault_strikes
from clients.shards import client_ids
from clients.sources import Source
from core.bundle import MIXED, Part, pack_reply, unpack
from core.params import to_record
from core.wire import CLIENT_KEY, IDENTIFY, ROUND_KEY, SIZES_KEY
from fl_app.config import RunConfig, parse_config
from strategies.registry import client_handlers

app = ClientApp()


def client_index(node_config: dict, states: tuple[str, ...], shards: int) -> int:
    """This node's client (state-major, shards adjacent): `state` and `shard` from --node-config,
    else its simulation partition-id."""
    if "state" in node_config:
        state = str(node_config["state"]).upper()
        if state not in states:
            raise ValueError(f"node-config state '{state}' is not among the run's states {','.join(states)}")
        if "shard" not in node_config and shards > 1:
            raise ValueError(f"node-config gives state '{state}' but no shard; clients-per-state is {shards}")
        shard = int(node_config.get("shard", 0))
        if not 0 <= shard < shards:
            raise ValueError(f"node-config shard {shard} outside 0..{shards - 1} (clients-per-state {shards})")
        return states.index(state) * shards + shard
    index = int(node_config["partition-id"])
    if index >= len(states) * shards:
        raise ValueError(
            f"partition-id {index} but the run has only {len(states) * shards} clients "
            f"({len(states)} states x {shards} clients-per-state)"
        )
    return index


def _source(config: ConfigRecord) -> Source:
    return Source(str(config["source-kind"]), str(config["source-path"]), tuple(str(config["states"]).split(",")))


@lru_cache(maxsize=256)
def _config(run_config: tuple, replicate: tuple) -> RunConfig:
    """A replicate's config: the federation's run config with the replicate's own keys on top."""
    return parse_config({**dict(run_config), **dict(replicate)})


def _job(part: Part, context: Context) -> ClientJob:
    config = _config(tuple(sorted(context.run_config.items())), tuple(sorted(part.run.items())))
    sent = part.content["config"]
    source = _source(sent)
    index = client_index(context.node_config, source.states, config.clients_per_state)
    client = client_ids(source.states, config.clients_per_state)[index]
    data = state_data(source, config.task, client, config.seed, config.synthetic_rows, config.synthetic_reversed,
                      config.encoding, config.train_rows, config.test_rows, config.val_rows)
    server_round = int(sent[ROUND_KEY])
    strikes = fault_strikes(config.seed, client, server_round, config.fail_states, config.fail_prob)
    return ClientJob(config, data, index, server_round, config.fail_mode if strikes else None)


def _identify(job: ClientJob) -> RecordDict:
    """Which client this node serves (the server's node-to-client map), and its split sizes."""
    sizes = job.data.sizes()
    return RecordDict({"metrics": MetricRecord({CLIENT_KEY: job.index, SIZES_KEY: [sizes[s] for s in SPLITS]})})


def _answer(part: Part, context: Context) -> RecordDict | Error:
    """One replicate's reply: its handler's records, or the error it raised (that replicate fails alone)."""
    try:
        job = _job(part, context)
        if part.message_type == IDENTIFY:
            return _identify(job)
        if part.message_type.startswith("train"):
            job.hang_if_asked()
        reply = HANDLERS[part.message_type](job, part.content)
    except Exception as ex:  # as Flower's runtime reports a ClientApp that raised
        return Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, f"{type(ex)}:<'{ex}'>")
    content = RecordDict({"metrics": MetricRecord({**reply.metrics, CLIENT_KEY: job.index})})
    if reply.params is not None:
        params = corrupt_update(reply.params, job.fault) if job.fault in UPDATE_FAULTS else reply.params
        content["arrays"] = to_record(params)
    return content


def serve(msg: Message, context: Context) -> Message:
    """Every replicate's part of the message in turn (core/bundle.py); one reply carrying all."""
    parts = unpack(msg.content)
    shards = _config(tuple(sorted(context.run_config.items())), tuple(sorted(parts[0].run.items()))).clients_per_state
    index = client_index(context.node_config, _source(msg.content["config"]).states, shards)
    return Message(pack_reply(CLIENT_KEY, index, {p.tag: _answer(p, context) for p in parts}), reply_to=msg)


HANDLERS = client_handlers()
for message_type in (*HANDLERS, IDENTIFY, *(f"{kind}.{MIXED}" for kind in ("train", "evaluate"))):
    kind, _, name = message_type.partition(".")
    getattr(app, kind)(name or "default")(serve)
