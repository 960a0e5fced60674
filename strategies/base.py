"""Machinery every strategy shares: the fairness hook on evaluation and feeding the results files.

A subclass decides what each client trains and how replies are aggregated; this base sends
each client the model it would deploy (`deployed_model`), keeps every client's evaluation,
derives the fairness metrics from counts and writes a whole round to the results directory.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from analysis.fairness import metrics_frame
from analysis.results import ResultsWriter
from analysis.tables import evaluation_tables
from clients.sources import Source
from clients.model import init_params
from clients.tasks import ATTRIBUTES, TASKS
from fl_app.config import RunConfig
from strategies.messages import Evaluation, metrics_to_evaluation, to_record


@dataclass(frozen=True)
class RunContext:
    """What a strategy is built from: the validated config, the resolved data, the writer."""

    config: RunConfig
    source: Source
    writer: ResultsWriter


class FederationSizeError(ValueError):
    """The number of SuperNodes does not match the number of states (clients)."""


def check_federation_size(node_ids: list[int], states: tuple[str, ...]) -> None:
    if len(node_ids) != len(states):
        raise FederationSizeError(
            f"the federation has {len(node_ids)} SuperNodes but the data has {len(states)} states "
            f"({','.join(states)}); run with --federation-config \"num-supernodes={len(states)}\" "
            "or choose states with the 'states' config key"
        )


class ClientFailure(RuntimeError):
    """A client replied with an error."""


class FairnessStrategy(Strategy):
    """Base of all strategies: fairness hook, per-client bookkeeping and results writing."""

    evaluate_type = MessageType.EVALUATE

    def __init__(self, run: RunContext) -> None:
        self.run = run
        self.config = run.config
        self.states = run.source.states
        self.round_started = time.perf_counter()
        self.summary_row: dict[str, float] = {}
        self.rounds_done = 0

    def initial_arrays(self) -> ArrayRecord:
        """The round-0 model(s), seeded by the run's seed."""
        task = TASKS[self.config.task]
        return to_record(init_params(task.width, task.hidden, self.config.seed))

    def summary(self) -> None:
        print(
            f"[{self.config.strategy}] {len(self.states)} clients, {self.config.num_server_rounds} rounds, "
            f"task {self.config.task}, data {self.run.source.kind}",
            flush=True,
        )

    def message_config(self, server_round: int) -> ConfigRecord:
        """What every message carries besides models: the round and the resolved data source."""
        return ConfigRecord(
            {
                "server-round": server_round,
                "source-kind": self.run.source.kind,
                "source-path": self.run.source.path,
                "states": ",".join(self.states),
            }
        )

    def node_ids(self, grid: Grid) -> list[int]:
        nodes = sorted(grid.get_node_ids())
        check_federation_size(nodes, self.states)
        return nodes

    @staticmethod
    def replies_ok(replies: Iterable[Message]) -> list[Message]:
        """The replies, or a clear failure naming the clients that raised."""
        replies = list(replies)
        errors = [m for m in replies if m.has_error()]
        if errors:
            reasons = "; ".join(f"node {m.metadata.src_node_id}: {m.error.reason}" for m in errors[:3])
            raise ClientFailure(f"{len(errors)} client(s) failed: {reasons}")
        return replies

    def send(self, grid: Grid, server_round: int, message_type: str, payloads: dict[int, ArrayRecord]) -> list[Message]:
        """One message per node, each with its own model payload."""
        config = self.message_config(server_round)
        return [
            Message(RecordDict({"arrays": arrays, "config": config}), dst_node_id=node, message_type=message_type)
            for node, arrays in payloads.items()
        ]

    def deployed_model(self, node_id: int, arrays: ArrayRecord) -> ArrayRecord:
        """The model a client is evaluated with (FedAvg: the global one)."""
        return arrays

    def cluster_of_states(self) -> dict[int, int]:
        """State index -> cluster id, for clustered strategies."""
        return {}

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        nodes = self.node_ids(grid)
        return self.send(grid, server_round, self.evaluate_type, {n: self.deployed_model(n, arrays) for n in nodes})

    def evaluations(self, replies: list[Message]) -> dict[str, list[Evaluation]]:
        """Per model tag, every client's evaluation in the replies."""
        return {"deployed": [metrics_to_evaluation(m.content["metrics"]) for m in replies]}

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        replies = self.replies_ok(replies)
        tables = [
            evaluation_tables(server_round, evs, self.states, self.cluster_of_states(), model)
            for model, evs in self.evaluations(replies).items()
        ]
        counts = pd.concat([t[0] for t in tables], ignore_index=True)
        clients = pd.concat([t[1] for t in tables], ignore_index=True)
        metrics = metrics_frame(counts, clients)
        self.write_round(server_round, counts, metrics)
        shown = ["pooled_accuracy", *(f"mean_sp_gap_{a}" for a in ATTRIBUTES)]
        return MetricRecord({k: self.summary_row[k] for k in shown if np.isfinite(self.summary_row.get(k, np.nan))})

    def write_round(self, server_round: int, counts: pd.DataFrame, metrics: pd.DataFrame) -> None:
        deployed = counts[counts["model"] == "deployed"].drop(columns="model")
        self.run.writer.append("counts.csv", counts if counts["model"].nunique() > 1 else deployed)
        self.run.writer.append("metrics.csv", metrics)
        self.summary_row = headline(metrics)
        seconds = time.perf_counter() - self.round_started
        gaps = " ".join(f"{a} {self.summary_row.get(f'mean_sp_gap_{a}', float('nan')):.4f}" for a in ATTRIBUTES)
        print(
            f"round {server_round:>3} | pooled acc {self.summary_row.get('pooled_accuracy', float('nan')):.4f} "
            f"| mean SP gap {gaps} | {seconds:.1f} s",
            flush=True,
        )
        self.round_started = time.perf_counter()
        self.rounds_done = server_round

    def final_summary(self) -> dict[str, object]:
        """summary.json: the final round's headline numbers."""
        return {
            "strategy": self.config.strategy,
            "task": self.config.task,
            "rounds": self.rounds_done,
            "num_clients": len(self.states),
            "data_source": self.run.source.kind,
            **self.summary_row,
        }


def headline(metrics: pd.DataFrame) -> dict[str, float]:
    """The round's headline numbers: pooled accuracy and gaps, client means of accuracy and gaps."""
    row: dict[str, float] = {}
    for state, label in (("ALL", "pooled"), ("MEAN", "mean")):
        part = metrics[metrics["state"] == state]
        for _, r in part.iterrows():
            suffix = f"_{r['attribute']}" if r["attribute"] else ""
            row[f"{label}_{r['metric']}{suffix}"] = float(r["value"])
    return row
