"""The recorder: one completed round, as a value, into rows, files, a checkpoint and a log line.

Rows are appended per round, a whole round in one write (recorder/files.py), and the checkpoint
after them, so a run killed at any moment resumes from its last complete round.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from logging import INFO
from typing import Any

import pandas as pd
from flwr.common.logger import log

from core.params import Params
from core.plateau import Plateau
from core.rounds import RoundResult
from core.tasks import ATTRIBUTES
from core.wire import VAL_TAG
from recorder.checkpoint import Checkpoint, save_checkpoint
from recorder.files import ResultsWriter
from recorder.metrics import metrics_frame
from recorder.tables import evaluation_tables, health_rows, pooled_loss


def headline(metrics: pd.DataFrame) -> dict[str, float]:
    """The round's headline numbers: pooled accuracy and gaps, client means of accuracy and gaps."""
    row: dict[str, float] = {}
    for state, label in (("ALL", "pooled"), ("MEAN", "mean")):
        part = metrics[metrics["state"] == state]
        for attribute, metric, value in zip(part["attribute"], part["metric"], part["value"]):
            suffix = f"_{attribute}" if attribute else ""
            row[f"{label}_{metric}{suffix}"] = float(value)
    return row


def clock(seconds: float) -> str:
    """m:ss (or h:mm:ss) for progress lines."""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def cluster_frame(choices: list[dict[str, Any]]) -> pd.DataFrame:
    """clusters.csv rows: round, state, cluster, then the per-model scores in their given order."""
    columns = ["round", "state", "cluster"]
    for row in choices:
        columns += [c for c in row if c not in columns]
    return pd.DataFrame(choices, columns=columns)


class Recorder:
    """Writes each round of one run and keeps its headline numbers (summary.json, console)."""

    def __init__(self, writer: ResultsWriter, clients: tuple[str, ...], strategy: str, task: str, data_source: str,
                 total_rounds: int, label: str = "", plateau: Plateau | None = None) -> None:
        self.writer = writer
        self.label = label  # names the replicate in console lines when a federation trains several
        self.clients = clients
        self.run = {"strategy": strategy, "task": task, "data_source": data_source}
        self.total_rounds = total_rounds
        self.summary_row: dict[str, float] = {}
        self.rounds_done = 0
        self.started = self.round_started = time.perf_counter()
        self.rounds_timed = 0
        self.plateau = plateau or Plateau(0, 0.0)  # watches each evaluated round's pooled validation loss

    def split_tables(self, result: RoundResult, val: bool) -> tuple[pd.DataFrame, pd.DataFrame] | None:
        """(counts rows, metrics rows) of the test split, or of validation (`val`); None if not evaluated."""
        if not result.evaluations:
            return None
        models = [t for t in result.evaluations[0] if t.startswith(VAL_TAG) == val]
        if not models:
            return None
        tables = [
            evaluation_tables(result.server_round, [tags[model] for tags in result.evaluations], self.clients,
                              result.clusters, model.removeprefix(VAL_TAG))
            for model in models
        ]
        counts = pd.concat([t[0] for t in tables], ignore_index=True)
        clients = pd.concat([t[1] for t in tables], ignore_index=True)
        metrics = metrics_frame(counts, clients)
        return (counts if counts["model"].nunique() > 1 else counts.drop(columns="model")), metrics

    def tables(self, result: RoundResult) -> dict[str, pd.DataFrame]:
        """The round's rows per results file (only files that get rows): test split in counts.csv and
        metrics.csv (with the round's failure counts), validation in val_counts.csv and val_metrics.csv."""
        staged: dict[str, pd.DataFrame] = {}
        self.summary_row = {}
        test = self.split_tables(result, val=False)
        if test:
            staged["counts.csv"], staged["metrics.csv"] = test
            self.summary_row = headline(test[1])
        val = self.split_tables(result, val=True)
        if val:
            staged["val_counts.csv"], staged["val_metrics.csv"] = val
        health = health_rows(result.server_round, result.health.counts())
        evaluated = staged.pop("metrics.csv", None)
        staged["metrics.csv"] = health if evaluated is None else pd.concat([evaluated, health], ignore_index=True)
        if result.cluster_choices:
            staged["clusters.csv"] = cluster_frame(result.cluster_choices)
        return {name: frame for name, frame in staged.items() if len(frame)}

    def commit(self, result: RoundResult, arrays: Params, state: Mapping[str, Any]) -> None:
        """Write the round's rows, report it, then checkpoint it with the algorithm's state (and the
        plateau tracker's, after it saw the round's pooled validation loss)."""
        tables = self.tables(result)
        for name, frame in tables.items():
            self.writer.append(name, frame)
        if "val_metrics.csv" in tables:
            losses = pooled_loss(tables["val_metrics.csv"])[1]
            self.plateau.observe(result.server_round, losses[0] if losses else math.nan)
        self.rounds_done = result.server_round
        self.report(result)
        save_checkpoint(
            self.writer.directory,
            Checkpoint(result.server_round, arrays,
                       {**state, "summary_row": self.summary_row, "plateau": self.plateau.state()},
                       self.writer.csv_sizes()),
        )

    def restore(self, checkpoint: Checkpoint) -> None:
        self.summary_row = dict(checkpoint.strategy_state["summary_row"])
        self.rounds_done = checkpoint.server_round
        if "plateau" in checkpoint.strategy_state:  # absent from checkpoints written before the early stop
            self.plateau.restore(checkpoint.strategy_state["plateau"])

    def report(self, result: RoundResult) -> None:
        """The round's console line: headline numbers, failures, its time, elapsed time and ETA.

        The ETA is the mean time of this process's rounds times the rounds left."""
        now = time.perf_counter()
        seconds, elapsed = now - self.round_started, now - self.started
        self.rounds_timed += 1
        eta = elapsed / self.rounds_timed * (self.total_rounds - result.server_round)
        gaps = " ".join(f"{a} {self.summary_row.get(f'mean_sp_gap_{a}', float('nan')):.4f}" for a in ATTRIBUTES)
        h = result.health
        kept = ""
        if h.model_kept:
            usable = f"{len(h.trained)} usable update(s) < min-clients {h.quorum}" if h.trained else "no usable update"
            kept = f" | {usable}: previous model kept"
        refused = f" refused {h.refused_nodes}" if h.refused_nodes else ""
        log(
            INFO,
            "%sround %3d/%d | pooled acc %.4f | mean SP gap %s | failed %d rejected %d eval-failed %d%s%s | %.1f s "
            "| elapsed %s, ETA %s",
            self.label, result.server_round, self.total_rounds, self.summary_row.get("pooled_accuracy", float("nan")), gaps,
            h.failed_clients, h.rejected_updates, h.failed_evaluations, refused, kept, seconds, clock(elapsed),
            clock(eta),
        )
        self.round_started = time.perf_counter()

    def final_summary(self) -> dict[str, Any]:
        """summary.json: the final round's headline numbers; with an early stop (patience > 0) also
        where and why the run stopped (analysis/study_tables.py reads `plateaued` as converged)."""
        summary = {
            "strategy": self.run["strategy"], "task": self.run["task"], "rounds": self.rounds_done,
            "num_clients": len(self.clients), "data_source": self.run["data_source"], **self.summary_row,
        }
        p = self.plateau
        if p.patience > 0:
            plateaued = p.reached(self.rounds_done)
            summary["stopped"] = {
                "round": self.rounds_done, "reason": "plateau" if plateaued else "ceiling", "plateaued": plateaued,
                "best_val_round": p.best_round, "patience": p.patience, "min_delta": p.min_delta,
            }
        return summary
