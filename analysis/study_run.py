"""Executing the study's plan: one `./run.sh run` per unfinished run, `runs.csv` kept current, resume.

Imports the plan, never the reporting (analysis/study_report.py), which runs after this is done.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.study_plan import LOCK_FILE, REPO, PlannedRun, StudyError
from recorder.files import write_atomic

RUNS_COLUMNS = ["strategy", "config", "seed", "run_dir", "status", "wall_s"]


def run_state(run_dir: Path) -> str:
    """complete (summary.json), resume (a run started there: config.json) or new."""
    if (run_dir / "summary.json").is_file():
        return "complete"
    if (run_dir / "config.json").is_file():
        return "resume"
    return "new"


def run_environment() -> dict[str, str]:
    """run.sh uses this interpreter's virtualenv unless told otherwise, so it never builds another."""
    return {**os.environ, "FAIRFL_VENV": os.environ.get("FAIRFL_VENV", sys.prefix)}


def preflight(run_config: str) -> str | None:
    """The app's own pre-flight check of one run's config and data (None: fine, else its message)."""
    proc = subprocess.run([sys.executable, "-m", "fl_app.check", "--run-config", run_config], cwd=REPO,
                          env=run_environment(), capture_output=True, text=True)
    if proc.returncode == 0:
        return None
    return (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1].removeprefix("error: ")


def train(run_config: str, log: Path) -> int:
    """One `./run.sh run`; its output goes to `log` (appended, so a resumed run's log keeps both parts)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as handle:
        handle.write(f"\n=== ./run.sh run --run-config '{run_config}'\n")
        handle.flush()
        return subprocess.run(["bash", str(REPO / "run.sh"), "run", "--run-config", run_config], cwd=REPO,
                              env=run_environment(), stdout=handle, stderr=subprocess.STDOUT).returncode


def read_runs_csv(path: Path) -> dict[str, dict[str, str]]:
    """Earlier rows of runs.csv by run_dir (wall times of runs completed before)."""
    if not path.is_file():
        return {}
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    return {row["run_dir"]: row for row in frame.to_dict("records")} if "run_dir" in frame else {}


def write_runs_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    frame = pd.DataFrame(list(rows), columns=RUNS_COLUMNS)
    write_atomic(path, frame.to_csv(index=False, lineterminator="\n").encode())


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def eta(remaining: Sequence[str], walls: Mapping[str, list[float]]) -> float | None:
    """Seconds left: each remaining run at its strategy's mean wall time so far (else all runs' mean)."""
    every = [w for ws in walls.values() for w in ws]
    if not every:
        return None
    mean = sum(every) / len(every)
    return sum(sum(walls[s]) / len(walls[s]) if walls.get(s) else mean for s in remaining)


def lock(out: Path) -> int:
    """Hold an exclusive lock on the study directory for this process's lifetime (freed even by SIGKILL)."""
    fd = os.open(out / LOCK_FILE, os.O_CREAT | os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StudyError(f"--out: another study process is running in {str(out)!r}") from None
    return fd


def check_configs(out: Path, runs: Sequence[PlannedRun]) -> None:
    """The app's pre-flight check once per configuration with work left, before anything is written."""
    checked = set()
    for run in runs:
        state = run_state(out / run.run_dir)
        if state == "complete" or (run.strategy, run.config) in checked:
            continue
        checked.add((run.strategy, run.config))
        problem = preflight(run.run_config(out / run.run_dir, state == "resume"))
        if problem:
            raise StudyError(f"{run.strategy} ({run.config}), {run.run_dir}: {problem}")


def execute(out: Path, runs: Sequence[PlannedRun], say: Callable[[str], None]) -> list[dict[str, Any]]:
    """Train what is not complete, one run at a time, keeping runs.csv current; returns its rows.

    A resumed run's wall_s is the time of the invocation that finished it.
    """
    before = read_runs_csv(out / "runs.csv")
    rows, todo, walls = [], [], {}
    for run in runs:
        state = run_state(out / run.run_dir)
        wall = before.get(run.run_dir, {}).get("wall_s", "") if state == "complete" else ""
        rows.append({"strategy": run.strategy, "config": run.config, "seed": run.seed, "run_dir": run.run_dir,
                     "status": "completed" if state == "complete" else "pending", "wall_s": wall})
        if state != "complete":
            todo.append((len(rows) - 1, run, state))
        elif wall:
            walls.setdefault(run.strategy, []).append(float(wall))
    write_runs_csv(out / "runs.csv", rows)
    if not todo:
        say(f"nothing to train: all {len(runs)} runs in {out} are complete; rewriting summary and report")
        return rows
    resumes = sum(state == "resume" for *_, state in todo)
    say(f"study {out}: {len(runs)} runs, {len(runs) - len(todo)} complete (skipped), {resumes} to resume, "
        f"{len(todo) - resumes} to train")
    for done, (index, run, state) in enumerate(todo, start=1):
        run_dir, log = out / run.run_dir, out / "logs" / f"{run.name}.log"
        if state == "new" and run_dir.exists():
            shutil.rmtree(run_dir)  # started but never wrote config.json: nothing to continue
        started = time.monotonic()
        code = train(run.run_config(run_dir, state == "resume"), log)
        wall = time.monotonic() - started
        ok = code == 0 and run_state(run_dir) == "complete"
        rows[index].update(status="completed" if ok else "failed", wall_s=f"{wall:.1f}")
        write_runs_csv(out / "runs.csv", rows)
        if ok:
            walls.setdefault(run.strategy, []).append(wall)
        left = [r.strategy for _, r, _ in todo[done:]]
        seconds = eta(left, walls)
        what = "completed" if ok else f"FAILED (exit {code}; log {log})"
        label = run.strategy if run.config == "-" else f"{run.strategy} {run.config}"
        say(f"[{done}/{len(todo)}] {label} seed {run.seed}: {what} in {_duration(wall)}"
            f"{' (resumed)' if state == 'resume' else ''} | {len(left)} left"
            + (f", ETA {_duration(seconds)}" if left and seconds is not None else ""))
    return rows
