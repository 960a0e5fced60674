"""The study's tuning phase: each tuned strategy at every candidate of the grid's `[tune]` table on
the tuning seeds (runs/tune-*), scored on validation, and the choice that arm "tuned" then runs on
every seed (analysis/study_plan.py plans it).

Score: the study's choice on validation (analysis.stats.chosen_round): a run's pooled validation loss
at the round it chooses, i.e. its lowest, averaged over the tuning seeds; the lowest mean wins, the
earlier candidate on ties. A Fair-* strategy takes its base strategy's choice (it is that strategy at
lambda = 0), so tuning never weighs fairness against loss.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.stats import chosen_round
from analysis.study_plan import (
    FAIR_BASES,
    TUNED,
    Grid,
    PlannedRun,
    StudyError,
    Tune,
    parse_run_config,
    pin_preset,
    study_settings,
    takes_lambda,
)
from fl_app.config import with_preset
from recorder.files import write_atomic
from recorder.tables import pooled_loss

TUNING_FILE = "tuning.csv"
TUNE_PREFIX = "tune-"
TUNING_COLUMNS = ["strategy", "arm", "candidate", "seeds", "val_loss", "val_accuracy", "val_rounds", "stopped",
                  "chosen"]


def candidate_label(candidate: Mapping[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in candidate.items())


def tuned_strategies(tune: Tune) -> list[str]:
    """The strategies trained in the tuning phase (Fair-* ones take their base's choice)."""
    return [s for s in tune.strategies if not takes_lambda(s)]


def tuning_runs(grid: Grid) -> list[PlannedRun]:
    """Every tuning run: strategy x candidate x tuning seed, each with the study's keys for that
    strategy under the candidate's (config "tune <candidate>", directory runs/tune-*)."""
    if grid.tune is None:
        return []
    runs = []
    for strategy in tuned_strategies(grid.tune):
        for candidate in grid.tune.candidates():
            label = candidate_label(candidate)
            for seed in grid.tune.seeds:
                keys = pin_preset({"strategy": json.dumps(strategy), **study_settings(strategy), **grid.run_config,
                                   **grid.strategy_config.get(strategy, {}), **candidate, "seed": str(seed)})
                given = with_preset(parse_run_config(" ".join(f"{k}={v}" for k, v in keys.items())))
                if not given.get("val-rows", 0):
                    raise StudyError(f"--grid: tune: {strategy} has no validation split to choose on; set val-rows > 0 "
                                     "(with train-rows and test-rows) or preset \"paper\" in [run-config]")
                slug = "_".join(f"{k}{json.loads(v)}" for k, v in candidate.items())
                runs.append(PlannedRun(strategy, f"tune {label}", seed, f"{TUNE_PREFIX}{strategy}_{slug}_seed{seed}",
                                       keys))
    return runs


def score(run_dir: Path) -> tuple[float, float, int | None]:
    """(pooled validation loss and accuracy at the round chosen on validation, that round); NaN and None
    without a finite validation loss."""
    path = run_dir / "val_metrics.csv"
    if not path.is_file():
        return math.nan, math.nan, None
    frame = pd.read_csv(path, dtype={"state": str, "attribute": str, "metric": str}, keep_default_na=False)
    frame["value"] = pd.to_numeric(frame["value"].replace("", None)).astype(np.float64)
    chosen = chosen_round(*pooled_loss(frame))
    if chosen is None:
        return math.nan, math.nan, None
    at = frame[(frame["round"] == chosen) & (frame["state"] == "ALL") & (frame["attribute"] == "")]
    loss = float(at.loc[at["metric"] == "loss", "value"].iloc[0])
    accuracy = at.loc[at["metric"] == "accuracy", "value"]
    return loss, float(accuracy.iloc[0]) if len(accuracy) else math.nan, chosen


def stopped(run_dir: Path) -> str:
    """Where and why a run stopped ("120 plateau", "300 ceiling"), or its last round without an early stop."""
    summary = json.loads((run_dir / "summary.json").read_text())
    stop = summary.get("stopped")
    return f"{stop['round']} {stop['reason']}" if stop else f"{summary.get('rounds', '?')} (no early stop)"


def choose(out: Path, grid: Grid, rows: Sequence[Mapping[str, Any]]) -> tuple[dict[str, dict[str, str]], pd.DataFrame]:
    """(strategy -> chosen candidate, the tuning table) from the completed tuning runs. A strategy gets
    a choice only when all its tuning runs completed and some candidate scored a finite loss."""
    if grid.tune is None:
        return {}, pd.DataFrame(columns=TUNING_COLUMNS)
    status = {r["run_dir"]: r["status"] for r in rows}
    runs = tuning_runs(grid)
    chosen: dict[str, dict[str, str]] = {}
    table = []
    for strategy in tuned_strategies(grid.tune):
        scored = []
        for candidate in grid.tune.candidates():
            label = f"tune {candidate_label(candidate)}"
            mine = [r for r in runs if r.strategy == strategy and r.config == label]
            if any(status.get(r.run_dir) != "completed" for r in mine):
                scored = []
                break
            found = [score(out / r.run_dir) for r in mine]
            losses = [f[0] for f in found]
            mean = float(np.mean(losses)) if all(np.isfinite(losses)) else math.nan
            scored.append((candidate, mean, float(np.mean([f[1] for f in found])),
                           ", ".join(str(f[2]) if f[2] is not None else "n/a" for f in found),
                           ", ".join(stopped(out / r.run_dir) for r in mine)))
        finite = [i for i, s in enumerate(scored) if np.isfinite(s[1])]
        if not finite:
            continue
        best = min(finite, key=lambda i: scored[i][1])
        chosen[strategy] = dict(scored[best][0])
        seeds = ", ".join(map(str, grid.tune.seeds))
        table += [[strategy, TUNED, candidate_label(c), seeds, loss, accuracy, rounds, stop, i == best]
                  for i, (c, loss, accuracy, rounds, stop) in enumerate(scored)]
    for strategy in grid.tune.strategies:
        if takes_lambda(strategy) and FAIR_BASES[strategy] in chosen:
            chosen[strategy] = chosen[FAIR_BASES[strategy]]
    return chosen, pd.DataFrame(table, columns=TUNING_COLUMNS)


def write_tuning(out: Path, table: pd.DataFrame) -> None:
    write_atomic(out / TUNING_FILE, table.to_csv(index=False, lineterminator="\n").encode())
