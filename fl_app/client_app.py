"""ClientApp: a state's client, or one shard of a state's (`clients-per-state`, clients/shards.py).

Thin wiring: every message type's handler comes from the strategy registry; this module
turns a message into a `ClientJob` (config, this client's data, round, fault) and the
handler's `ClientReply` into Flower's reply, which always names the client it comes from.

With `fail-states`/`fail-prob` set, the chosen clients inject `fail-mode` in the chosen rounds
(raise in training or evaluation, return a corrupt update, or hang in training), deterministically
by seed.
"""

from __future__ import annotations

from collections.abc import Callable

from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from clients.data import state_data
from clients.job import ClientJob, ClientReply
from clients.local import UPDATE_FAULTS, corrupt_update, fault_strikes
from clients.shards import client_ids
from clients.sources import Source
from core.params import to_record
from core.wire import CLIENT_KEY, IDENTIFY, ROUND_KEY, SIZES_KEY
from fl_app.config import parse_config
from strategies.algorithm import Handler
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


def _source(msg: Message) -> Source:
    sent = msg.content["config"]
    return Source(str(sent["source-kind"]), str(sent["source-path"]), tuple(str(sent["states"]).split(",")))


def _job(msg: Message, context: Context) -> ClientJob:
    config = parse_config(context.run_config)
    source = _source(msg)
    index = client_index(context.node_config, source.states, config.clients_per_state)
    client = client_ids(source.states, config.clients_per_state)[index]
    data = state_data(source, config.task, client, config.seed, config.synthetic_rows, config.synthetic_reversed,
                      config.encoding, config.train_rows, config.test_rows, config.val_rows)
    server_round = int(msg.content["config"][ROUND_KEY])
    strikes = fault_strikes(config.seed, client, server_round, config.fail_states, config.fail_prob)
    return ClientJob(config, data, index, server_round, config.fail_mode if strikes else None)


def _reply(msg: Message, job: ClientJob, reply: ClientReply) -> Message:
    content = {"metrics": MetricRecord({**reply.metrics, CLIENT_KEY: job.index})}
    if reply.params is not None:
        params = corrupt_update(reply.params, job.fault) if job.fault in UPDATE_FAULTS else reply.params
        content["arrays"] = to_record(params)
    return Message(RecordDict(content), reply_to=msg)


def _wrap(handler: Handler) -> Callable[[Message, Context], Message]:
    def run(msg: Message, context: Context) -> Message:
        job = _job(msg, context)
        if msg.metadata.message_type.startswith("train"):
            job.hang_if_asked()
        return _reply(msg, job, handler(job, msg.content))

    run.__doc__ = handler.__doc__
    return run


for message_type, handler in client_handlers().items():
    kind, _, name = message_type.partition(".")
    getattr(app, kind)(name or "default")(_wrap(handler))


@app.query(IDENTIFY.partition(".")[2])
def identify(msg: Message, context: Context) -> Message:
    """Which client this node serves (the server's node-to-client map), and its split sizes."""
    job = _job(msg, context)
    sizes = job.data.sizes()
    metrics = MetricRecord({CLIENT_KEY: job.index, SIZES_KEY: [sizes[s] for s in ("train", "test", "val")]})
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)
