"""ClientApp: a state's client. Reads its data once per process, trains and evaluates on request."""

from __future__ import annotations

from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from clients.data import StateData, state_data
from clients.local import evaluate_local, local_rng, train_local
from clients.sources import Source
from fl_app.config import RunConfig, parse_config
from strategies.messages import evaluation_to_metrics, from_record, to_record

app = ClientApp()


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
    data = state_data(source, config.task, source.states[index], config.seed, config.synthetic_rows)
    return config, data, index, int(sent["server-round"])


@app.train()
def train(msg: Message, context: Context) -> Message:
    config, data, index, server_round = _setup(msg, context)
    params, loss = train_local(
        from_record(msg.content["arrays"]),
        data.train,
        lr=config.lr,
        epochs=config.local_epochs,
        batch_size=config.batch_size,
        rng=local_rng(config.seed, data.state, server_round),
    )
    metrics = MetricRecord({"num-examples": len(data.train), "train-loss": loss, "state-index": index})
    return Message(RecordDict({"arrays": to_record(params), "metrics": metrics}), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    _, data, index, _ = _setup(msg, context)
    evaluation = evaluate_local(from_record(msg.content["arrays"]), data.test, index)
    metrics = {"num-examples": evaluation.n, "state-index": index, **evaluation_to_metrics(evaluation)}
    return Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)
