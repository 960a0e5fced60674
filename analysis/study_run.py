"""Executing the study's plan: its unfinished runs as replicates of as few `./run.sh run` federations as
their data settings allow (one for a grid on one data set), `runs.csv` kept current, resume.

Imports the plan, never the reporting (analysis/study_report.py), which runs after this is done.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.study_plan import LOCK_FILE, REPO, PlannedRun, StudyError, parse_run_config
from fl_app.replicates import FEDERATION_KEYS, REPLICATES_KEY
from recorder.files import write_atomic

RUNS_COLUMNS = ["strategy", "config", "seed", "run_dir", "status", "wall_s", "federation"]
RUN_ID = re.compile(r"^run (\d+): ", re.M)  # run.sh's line naming the flwr run and its final status


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


def train(run_config: str, log: Path) -> tuple[int, str]:
    """One `./run.sh run` (a federation); its exit code and flwr run id ("" if it never started).
    Its output goes to `log` (appended, so a resumed federation's log keeps both parts)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as handle:
        handle.write(f"\n=== ./run.sh run --run-config '{run_config}'\n")
        handle.flush()
        start = handle.tell()
        code = subprocess.run(["bash", str(REPO / "run.sh"), "run", "--run-config", run_config], cwd=REPO,
                              env=run_environment(), stdout=handle, stderr=subprocess.STDOUT).returncode
    with open(log) as handle:
        handle.seek(start)
        found = RUN_ID.findall(handle.read())
    return code, found[-1] if found else ""


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


def federations(todo: Sequence[tuple[int, PlannedRun, str]]) -> list[list[tuple[int, PlannedRun, str]]]:
    """The runs left grouped into as few federations as their data settings allow: runs that agree
    on every key the nodes of a federation share (fl_app/replicates.py) train together."""
    groups: dict[tuple, list[tuple[int, PlannedRun, str]]] = {}
    for item in todo:
        keys = item[1].keys
        groups.setdefault(tuple(keys.get(k) for k in FEDERATION_KEYS), []).append(item)
    return list(groups.values())


def federation_config(group: Sequence[tuple[int, PlannedRun, str]], out: Path, name: str) -> str:
    """The `./run.sh run` config of one federation: the shared keys, and a replicates file holding
    each run's own keys with its results-dir (and resume)."""
    shared = {k: v for k, v in group[0][1].keys.items() if k in FEDERATION_KEYS}
    tables = []
    for _, run, state in group:
        own = " ".join(f"{k}={v}" for k, v in run.keys.items() if k not in FEDERATION_KEYS)
        table = parse_run_config(own, run.run_dir)
        table["results-dir"] = str(out / run.run_dir)
        if state == "resume":
            table["resume"] = str(out / run.run_dir)
        tables.append(table)
    path = out / "federations" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, (json.dumps(tables, indent=1) + "\n").encode())
    return " ".join([*(f"{k}={v}" for k, v in shared.items()), f"{REPLICATES_KEY}={json.dumps(str(path))}"])


def execute(out: Path, runs: Sequence[PlannedRun], say: Callable[[str], None],
            attempted: Sequence[Mapping[str, Any]] = (), last: bool = True) -> list[dict[str, Any]]:
    """Train what is not complete, in as few federations (`flwr run`s) as the data settings allow,
    keeping runs.csv current; returns its rows. Runs among `attempted` (rows of an earlier phase of
    this invocation) are not trained again: a failed one waits for the next invocation. `last`: no
    later phase follows, so "nothing to train" may be said.

    A run's `wall_s` is the wall time of the federation that trained it (for a resumed run, of the
    invocation that finished it), and `federation` that federation's flwr run id.
    """
    before = read_runs_csv(out / "runs.csv")
    tried = {r["run_dir"]: r for r in attempted}
    rows, todo, walls = [], [], {}
    for run in runs:
        state = run_state(out / run.run_dir)
        if run.run_dir in tried:
            rows.append(dict(tried[run.run_dir]))
            continue
        earlier = before.get(run.run_dir, {}) if state == "complete" else {}
        wall = earlier.get("wall_s", "")
        rows.append({"strategy": run.strategy, "config": run.config, "seed": run.seed, "run_dir": run.run_dir,
                     "status": "completed" if state == "complete" else "pending", "wall_s": wall,
                     "federation": earlier.get("federation", "")})
        if state != "complete":
            todo.append((len(rows) - 1, run, state))
        elif wall:
            walls.setdefault(run.strategy, []).append(float(wall))
    write_runs_csv(out / "runs.csv", rows)
    if not todo:
        if last:
            say(f"nothing to train: all {len(runs)} runs in {out} are complete; rewriting summary and report")
        return rows
    resumes = sum(state == "resume" for *_, state in todo)
    groups = federations(todo)
    say(f"study {out}: {len(runs)} runs, {len(runs) - len(todo)} complete (skipped), {resumes} to resume, "
        f"{len(todo) - resumes} to train, in {len(groups)} federation(s)")
    done = 0
    for number, group in enumerate(groups):
        for _, run, state in group:
            if state == "new" and (out / run.run_dir).exists():
                shutil.rmtree(out / run.run_dir)  # started but never wrote config.json: nothing to continue
        name = f"federation-{group[0][1].name}"
        started = time.monotonic()
        code, run_id = train(federation_config(group, out, name), out / "logs" / f"{name}.log")
        wall = time.monotonic() - started
        for index, run, state in group:
            done += 1
            ok = run_state(out / run.run_dir) == "complete"
            rows[index].update(status="completed" if ok else "failed", wall_s=f"{wall:.1f}", federation=run_id)
            if ok:
                walls.setdefault(run.strategy, []).append(wall / len(group))
            left = [r.strategy for later in groups[number + 1:] for _, r, _ in later]
            seconds = eta(left, walls)
            what = "completed" if ok else f"FAILED (exit {code}; log logs/{name}.log)"
            label = run.strategy if run.config == "-" else f"{run.strategy} {run.config}"
            say(f"[{done}/{len(todo)}] {label} seed {run.seed}: {what} in {_duration(wall)}"
                f"{' (resumed)' if state == 'resume' else ''} (federation {run_id or 'not started'} of {len(group)} "
                f"runs) | {len(left)} left" + (f", ETA {_duration(seconds)}" if left and seconds is not None else ""))
        write_runs_csv(out / "runs.csv", rows)
    return rows
