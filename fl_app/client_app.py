"""ClientApp: a state's client. Reads its data once per process, trains and evaluates on request."""

from __future__ import annotations

from flwr.app import Context, Message, MetricRecord, RecordDict

from flwr.clientapp import ClientApp

from clients.data import StateData, state_data
from clients.local import evaluate_local, local_rng, score_models, train_local
from clients.personalization import adapt, meta_train
from clients.sources import Source
from fl_app.config import RunConfig, parse_config
from strategies.ifca import choose_cluster, cluster_prefix
from strategies.messages import evaluation_to_metrics, from_record, to_record
from strategies.perfedavg import GLOBAL_PREFIX

app = ClientApp()

TRAIN, ADAPT = 0, 1  # purposes of a client's per-round random streams


def state_index(node_config: dict, states: tuple[str, ...]) -> int:
    """This node's state: `state` from --node-config, else its simulation partition-id."""
    if "state" in node_config:
        state = str(node_config["state"]).upper()
        if state not in states:
            raise ValueError(f"node-config state '{state}' is not among the run's states {','.join(states)}")
        return states.index(state)
    index = int(node_config["partition-id"])
    if index >= len(states):
        raise ValueError(f"partition-id {index} but the run has only {len(states)} states")
    return index


def _setup(msg: Message, context: Context) -> tuple[RunConfig, StateData, int, int]:
    config = parse_config(context.run_config)
    sent = msg.content["config"]
    source = Source(str(sent["source-kind"]), str(sent["source-path"]), tuple(str(sent["states"]).split(",")))
    index = state_index(context.node_config, source.states)
    data = state_data(
        source, config.task, source.states[index], config.seed, config.synthetic_rows, config.synthetic_reversed
    )
    return config, data, index, int(sent["server-round"])


def _reply(msg: Message, params, metrics: dict) -> Message:
    return Message(RecordDict({"arrays": to_record(params), "metrics": MetricRecord(metrics)}), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    config, data, index, server_round = _setup(msg, context)
    params, loss = train_local(
        from_record(msg.content["arrays"]), data.train, lr=config.lr, epochs=config.local_epochs,
        batch_size=config.batch_size, rng=local_rng(config.seed, data.state, server_round, TRAIN),
    )
    return _reply(msg, params, {"num-examples": len(data.train), "train-loss": loss, "state-index": index})


@app.train("perfedavg")
def train_perfedavg(msg: Message, context: Context) -> Message:
    config, data, index, server_round = _setup(msg, context)
    params, loss = meta_train(
        from_record(msg.content["arrays"]), data.train, alpha=config.lr, beta=config.meta_lr,
        epochs=config.local_epochs, batch_size=config.batch_size,
        rng=local_rng(config.seed, data.state, server_round, TRAIN), variant=config.maml_variant,
    )
    return _reply(msg, params, {"num-examples": len(data.train), "train-loss": loss, "state-index": index})


@app.train("ifca")
def train_ifca(msg: Message, context: Context) -> Message:
    config, data, index, server_round = _setup(msg, context)
    models = [from_record(msg.content["arrays"], cluster_prefix(j)) for j in range(config.k)]
    losses, gaps = score_models(models, data.train, config.fair_attribute, config.fair_metric)
    cluster = choose_cluster(losses, gaps, config.fair_lambda)
    params, loss = train_local(
        models[cluster], data.train, lr=config.lr, epochs=config.local_epochs,
        batch_size=config.batch_size, rng=local_rng(config.seed, data.state, server_round, TRAIN),
    )
    return _reply(msg, params, {
        "num-examples": len(data.train), "train-loss": loss, "state-index": index, "cluster": cluster,
        "losses": [float(v) for v in losses], "gaps": [float(v) for v in gaps],
    })


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    _, data, index, _ = _setup(msg, context)
    evaluation = evaluate_local(from_record(msg.content["arrays"]), data.test, index)
    metrics = {"num-examples": evaluation.n, "state-index": index, **evaluation_to_metrics(evaluation)}
    return Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)


@app.evaluate("perfedavg")
def evaluate_perfedavg(msg: Message, context: Context) -> Message:
    config, data, index, server_round = _setup(msg, context)
    global_params = from_record(msg.content["arrays"])
    adapted = adapt(global_params, data.train, steps=config.adapt_steps, lr=config.lr,
                    batch_size=config.batch_size, rng=local_rng(config.seed, data.state, server_round, ADAPT))
    deployed = evaluate_local(adapted, data.test, index)
    unadapted = evaluate_local(global_params, data.test, index)
    metrics = {
        "num-examples": deployed.n, "state-index": index,
        **evaluation_to_metrics(deployed), **evaluation_to_metrics(unadapted, GLOBAL_PREFIX),
    }
    return Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)
