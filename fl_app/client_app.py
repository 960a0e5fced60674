"""ClientApp: a state's client, or one shard of a state's (`clients-per-state`, clients/shards.py).
Reads its state's data once per process, trains and evaluates on request.

With `fail-states`/`fail-prob` set, the chosen clients inject `fail-mode` in the chosen rounds
(raise in training or evaluation, or return a corrupt update), deterministically by seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from clients.data import StateData, state_data
from clients.local import (
    ADAPT, TRAIN, UPDATE_FAULTS, InjectedFault, corrupt_update, evaluate_local, fault_strikes, local_rng,
    score_models, train_local,
)
from clients.personalization import adapt, meta_train
from clients.shards import client_ids
from clients.sources import Source
from fl_app.config import RunConfig, parse_config
from strategies.ifca import choose_cluster, cluster_prefix
from strategies.messages import Params, evaluation_to_metrics, from_record, to_record
from strategies.perfedavg import GLOBAL_PREFIX

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


@dataclass(frozen=True)
class Job:
    """One message's work: the run config, this client's data, the round and any fault to inject."""

    config: RunConfig
    data: StateData
    index: int
    server_round: int
    fault: str | None

    def rng(self, purpose: int) -> np.random.Generator:
        return local_rng(self.config.seed, self.data.client, self.server_round, purpose)

    def raise_if(self, mode: str) -> None:
        if self.fault == mode:
            raise InjectedFault(f"injected {mode} in {self.data.client.label}, round {self.server_round}")


def _job(msg: Message, context: Context) -> Job:
    config = parse_config(context.run_config)
    sent = msg.content["config"]
    source = Source(str(sent["source-kind"]), str(sent["source-path"]), tuple(str(sent["states"]).split(",")))
    index = client_index(context.node_config, source.states, config.clients_per_state)
    client = client_ids(source.states, config.clients_per_state)[index]
    data = state_data(source, config.task, client, config.seed, config.synthetic_rows, config.synthetic_reversed)
    server_round = int(sent["server-round"])
    strikes = fault_strikes(config.seed, client, server_round, config.fail_states, config.fail_prob)
    return Job(config, data, index, server_round, config.fail_mode if strikes else None)


def _train_job(msg: Message, context: Context) -> Job:
    job = _job(msg, context)
    job.raise_if("train-error")
    return job


def _reply(msg: Message, job: Job, params: Params, metrics: dict) -> Message:
    if job.fault in UPDATE_FAULTS:
        params = corrupt_update(params, job.fault)
    content = {"arrays": to_record(params), "metrics": MetricRecord({**metrics, "state-index": job.index})}
    return Message(RecordDict(content), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    job = _train_job(msg, context)
    config, data = job.config, job.data
    params, loss = train_local(
        from_record(msg.content["arrays"]), data.train, lr=config.lr, epochs=config.local_epochs,
        batch_size=config.batch_size, rng=job.rng(TRAIN),
    )
    return _reply(msg, job, params, {"num-examples": len(data.train), "train-loss": loss})


@app.train("perfedavg")
def train_perfedavg(msg: Message, context: Context) -> Message:
    job = _train_job(msg, context)
    config, data = job.config, job.data
    params, loss = meta_train(
        from_record(msg.content["arrays"]), data.train, alpha=config.lr, beta=config.meta_lr,
        epochs=config.local_epochs, batch_size=config.batch_size, rng=job.rng(TRAIN), variant=config.maml_variant,
    )
    return _reply(msg, job, params, {"num-examples": len(data.train), "train-loss": loss})


@app.train("ifca")
def train_ifca(msg: Message, context: Context) -> Message:
    job = _train_job(msg, context)
    config, data = job.config, job.data
    models = [from_record(msg.content["arrays"], cluster_prefix(j)) for j in range(config.k)]
    losses, gaps = score_models(models, data.train, config.fair_attribute, config.fair_metric)
    cluster = choose_cluster(losses, gaps, config.fair_lambda)
    params, loss = train_local(
        models[cluster], data.train, lr=config.lr, epochs=config.local_epochs,
        batch_size=config.batch_size, rng=job.rng(TRAIN),
    )
    return _reply(msg, job, params, {
        "num-examples": len(data.train), "train-loss": loss, "cluster": cluster,
        "losses": [float(v) for v in losses], "gaps": [float(v) for v in gaps],
    })


def _evaluation_reply(msg: Message, job: Job, metrics: dict) -> Message:
    return Message(RecordDict({"metrics": MetricRecord({**metrics, "state-index": job.index})}), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    job = _job(msg, context)
    job.raise_if("evaluate-error")
    evaluation = evaluate_local(from_record(msg.content["arrays"]), job.data.test, job.index)
    return _evaluation_reply(msg, job, {"num-examples": evaluation.n, **evaluation_to_metrics(evaluation)})


@app.evaluate("ifca")
def evaluate_ifca(msg: Message, context: Context) -> Message:
    """Evaluate the model of the cluster the server lists for this client."""
    job = _job(msg, context)
    job.raise_if("evaluate-error")
    cluster = int(msg.content["config"]["clusters"][job.index])
    evaluation = evaluate_local(from_record(msg.content["arrays"], cluster_prefix(cluster)), job.data.test, job.index)
    return _evaluation_reply(msg, job, {"num-examples": evaluation.n, **evaluation_to_metrics(evaluation)})


@app.evaluate("perfedavg")
def evaluate_perfedavg(msg: Message, context: Context) -> Message:
    job = _job(msg, context)
    job.raise_if("evaluate-error")
    config, data = job.config, job.data
    global_params = from_record(msg.content["arrays"])
    adapted = adapt(global_params, data.train, steps=config.adapt_steps, lr=config.lr,
                    batch_size=config.batch_size, rng=job.rng(ADAPT))
    deployed = evaluate_local(adapted, data.test, job.index)
    unadapted = evaluate_local(global_params, data.test, job.index)
    return _evaluation_reply(msg, job, {
        "num-examples": deployed.n, **evaluation_to_metrics(deployed), **evaluation_to_metrics(unadapted, GLOBAL_PREFIX),
    })
