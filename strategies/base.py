"""Machinery every strategy shares: the round loop, the fairness hook and the results files.

A subclass decides what each client trains and how usable updates are aggregated; this base
runs the rounds, keeps every client's evaluation, derives the fairness metrics from counts,
and at the end of each round writes its rows and a checkpoint (see strategies/checkpoint.py).
Failed clients and unusable replies are counted and left out (strategies/replies.py), so a
round completes with whoever answered.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from analysis.fairness import metrics_frame
from analysis.results import ResultsWriter
from analysis.tables import evaluation_tables, health_rows
from clients.sources import Source
from clients.model import init_params
from clients.shards import client_labels
from clients.tasks import ATTRIBUTES, TASKS
from fl_app.config import RunConfig
from strategies.checkpoint import Checkpoint, save_checkpoint
from strategies.messages import Evaluation, from_record, metrics_to_evaluation, to_record
from strategies.replies import RoundHealth, Update, usable_evaluations, usable_updates

REPLY_TIMEOUT_S = 3600.0  # Flower's default wait for a round's replies


@dataclass(frozen=True)
class RunContext:
    """What a strategy is built from: the validated config, the resolved data, the writer.

    `checkpoint` is where a resumed run continues from (None: from the start).
    """

    config: RunConfig
    source: Source
    writer: ResultsWriter
    checkpoint: Checkpoint | None = None


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


class FairnessStrategy(Strategy):
    """Base of all strategies: fairness hook, per-client bookkeeping and results writing."""

    evaluate_type = MessageType.EVALUATE

    def __init__(self, run: RunContext) -> None:
        self.run = run
        self.config = run.config
        self.clients = client_labels(run.source.states, self.config.clients_per_state)
        self.round_started = time.perf_counter()
        self.summary_row: dict[str, float] = {}
        self.rounds_done = 0
        self.health = RoundHealth()
        self.staged: dict[str, pd.DataFrame] = {}
        task = TASKS[self.config.task]
        self.shapes = {k: v.shape for k, v in init_params(task.width, task.hidden, 0).items()}

    def initial_arrays(self) -> ArrayRecord:
        """The round-0 model(s), seeded by the run's seed."""
        task = TASKS[self.config.task]
        return to_record(init_params(task.width, task.hidden, self.config.seed))

    def run_rounds(self, grid: Grid, arrays: ArrayRecord, first_round: int) -> ArrayRecord:
        """Rounds `first_round`..num-server-rounds: train, evaluate, then commit results and checkpoint.

        Replaces `Strategy.start` so that a run can begin at any round and every round ends
        with its results and the state needed to continue written to disk.
        """
        self.summary()
        for server_round in range(first_round, self.config.num_server_rounds + 1):
            self.health = RoundHealth()
            train = self.configure_train(server_round, arrays, ConfigRecord(), grid)
            new_arrays, _ = self.aggregate_train(server_round, grid.send_and_receive(train, timeout=REPLY_TIMEOUT_S))
            arrays = arrays if new_arrays is None else new_arrays
            evaluate = self.configure_evaluate(server_round, arrays, ConfigRecord(), grid)
            self.aggregate_evaluate(server_round, grid.send_and_receive(evaluate, timeout=REPLY_TIMEOUT_S))
            self.commit_round(server_round, arrays)
        return arrays

    def resume(self, checkpoint: Checkpoint) -> ArrayRecord:
        """Restore the state saved after `checkpoint.server_round`; returns the arrays to continue with."""
        self.summary_row = dict(checkpoint.strategy_state["summary_row"])
        self.rounds_done = checkpoint.server_round
        return to_record(checkpoint.arrays)

    def checkpoint_state(self) -> dict[str, Any]:
        """The strategy's JSON-able state besides its arrays (subclasses add theirs)."""
        return {"summary_row": self.summary_row}

    def usable_updates(
        self, replies: Iterable[Message], check: Callable[[MetricRecord], str | None] | None = None
    ) -> list[Update]:
        """This round's usable training updates, sorted by client; the rest counted."""
        updates = usable_updates(replies, self.shapes, self.clients, self.health, check)
        self.health.model_kept = not updates
        return updates

    def summary(self) -> None:
        print(
            f"[{self.config.strategy}] {len(self.clients)} clients, {self.config.num_server_rounds} rounds, "
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
                "states": ",".join(self.run.source.states),
            }
        )

    def node_ids(self, grid: Grid) -> list[int]:
        nodes = sorted(grid.get_node_ids())
        check_federation_size(nodes, self.run.source.states, self.config.clients_per_state)
        return nodes

    def send(
        self, grid: Grid, server_round: int, message_type: str, payloads: dict[int, ArrayRecord],
        extra: Mapping[str, Any] | None = None,
    ) -> list[Message]:
        """One message per node, each with its own model payload; `extra` adds config entries."""
        config = self.message_config(server_round)
        for key, value in (extra or {}).items():
            config[key] = value
        return [
            Message(RecordDict({"arrays": arrays, "config": config}), dst_node_id=node, message_type=message_type)
            for node, arrays in payloads.items()
        ]

    def cluster_of_clients(self) -> dict[int, int]:
        """Client index -> cluster id, for clustered strategies."""
        return {}

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self.send(grid, server_round, self.evaluate_type, {n: arrays for n in self.node_ids(grid)})

    def read_evaluation(self, metrics: MetricRecord) -> dict[str, Evaluation]:
        """One client's evaluation reply, per model tag."""
        return {"deployed": metrics_to_evaluation(metrics)}

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """Stage the round's counts and metrics from the usable evaluations (none: failure counts only)."""
        usable = usable_evaluations(replies, self.read_evaluation, self.clients, self.health)
        self.summary_row = {}
        if not usable:
            return None
        tables = [
            evaluation_tables(server_round, [tags[model] for tags in usable], self.clients, self.cluster_of_clients(), model)
            for model in usable[0]
        ]
        counts = pd.concat([t[0] for t in tables], ignore_index=True)
        clients = pd.concat([t[1] for t in tables], ignore_index=True)
        metrics = metrics_frame(counts, clients)
        self.staged["counts.csv"] = counts if counts["model"].nunique() > 1 else counts.drop(columns="model")
        self.staged["metrics.csv"] = metrics
        self.summary_row = headline(metrics)
        return None

    def commit_round(self, server_round: int, arrays: ArrayRecord) -> None:
        """Write the round's rows (with its failure counts), report it, then checkpoint it."""
        health = health_rows(server_round, self.health.counts())
        evaluated = self.staged.pop("metrics.csv", None)
        self.staged["metrics.csv"] = health if evaluated is None else pd.concat([evaluated, health], ignore_index=True)
        for name, frame in self.staged.items():
            if len(frame):
                self.run.writer.append(name, frame)
        self.staged = {}
        self.rounds_done = server_round
        self.report(server_round)
        save_checkpoint(
            self.run.writer.directory,
            Checkpoint(server_round, from_record(arrays), self.checkpoint_state(), self.run.writer.csv_sizes()),
        )

    def report(self, server_round: int) -> None:
        """The round's console line: headline numbers, failures, time."""
        seconds = time.perf_counter() - self.round_started
        gaps = " ".join(f"{a} {self.summary_row.get(f'mean_sp_gap_{a}', float('nan')):.4f}" for a in ATTRIBUTES)
        h = self.health
        kept = " | no usable update: previous model kept" if h.model_kept else ""
        print(
            f"round {server_round:>3} | pooled acc {self.summary_row.get('pooled_accuracy', float('nan')):.4f} "
            f"| mean SP gap {gaps} | failed {h.failed_clients} rejected {h.rejected_updates} "
            f"eval-failed {h.failed_evaluations}{kept} | {seconds:.1f} s",
            flush=True,
        )
        self.round_started = time.perf_counter()

    def final_summary(self) -> dict[str, object]:
        """summary.json: the final round's headline numbers."""
        return {
            "strategy": self.config.strategy,
            "task": self.config.task,
            "rounds": self.rounds_done,
            "num_clients": len(self.clients),
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
