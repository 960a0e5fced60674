"""A study grid trained as replicates of one federation: its wall time, and a round's cost by replicates.

Run `python -m benchmarks.study_grid [--grid analysis/grids/paper.toml] [--rounds 20]
[--scaling 1,5,25,65] [--scaling-rounds 4] [--json]`. In one invocation, in this order:

1. `--scaling`: for each R, the first R runs of the grid's plan as one `./run.sh run` federation
   (`replicates`), `--scaling-rounds` rounds; a round's cost is the median of the steady rounds
   (2 on) of replicate r0's console lines, each of which spans one exchange of every replicate.
2. `--rounds` (0: skip): the whole grid through `./run.sh study` with that many rounds (`--fixed`:
   no early stop); its wall time, the replicate-rounds it trained, the federations in its runs.csv,
   the CPU seconds of its Ray actors (the clients' work summed over replicates) and of its other
   processes, and the peak memory (summed PSS of every process it started).

Every figure has the 1-minute load average before and after it (the cores are shared).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pandas as pd

from analysis.study import build_parser
from analysis.study_plan import build_grid, plan
from analysis.study_run import federation_config
from benchmarks.proctree import TaggedSampler
from benchmarks.round import loadavg

REPO = Path(__file__).resolve().parent.parent
TAG_NAME = "FAIRFL_BENCH_TAG"
R0_LINE = re.compile(r"\[r0 [^\]]*\] round\s+(\d+)/\d+ \|.*\| ([\d.]+) s \|")
ANY_ROUND = re.compile(r"round\s+(\d+)/\d+ \|.*\| ([\d.]+) s \|")


def run_tagged(command: list[str], env: dict[str, str]) -> dict:
    """A command with every process it starts tagged and sampled; wall time, lines, peak PSS, load."""
    tag = uuid.uuid4().hex
    env = {**env, TAG_NAME: tag}
    lines, before = [], loadavg()
    with TaggedSampler(f"{TAG_NAME}={tag}".encode()) as sampler:
        started = time.monotonic()
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            print(line, end="", file=sys.stderr, flush=True)
        code = proc.wait()
        wall = time.monotonic() - started
        ended = time.time()
    if code != 0:
        raise RuntimeError(f"{' '.join(command[:3])} failed with exit code {code}")
    begun = ended - wall
    return {"wall_s": wall, "lines": lines, "peak_pss_mb": round(sampler.peak().pss_mb),
            "actor_cpu_s": round(sampler.cpu_between(begun, ended, actors=True), 1),
            "other_cpu_s": round(sampler.cpu_between(begun, ended, actors=False), 1),
            "loadavg": [before, loadavg()]}


def scaling(grid_file: Path, counts: list[int], rounds: int, env: dict[str, str]) -> list[dict]:
    """Cost of a steady round with the first R runs of the grid in one federation, for each R."""
    out = []
    for count in counts:
        scratch = Path(tempfile.mkdtemp(prefix="fairfl-bench-grid-"))
        try:
            args = build_parser().parse_args(["--grid", str(grid_file), "--out", str(scratch / "study"),
                                              "--run-config", f"num-server-rounds={rounds}"])
            runs = plan(build_grid(args)[0])[:count]
            config = federation_config([(i, r, "new") for i, r in enumerate(runs)], scratch / "study", "bench")
            result = run_tagged(["bash", str(REPO / "run.sh"), "run", "--run-config", config], env)
        finally:
            shutil.rmtree(scratch)
        pattern = R0_LINE if count > 1 else ANY_ROUND
        seconds = [float(m[2]) for m in (pattern.search(line) for line in result["lines"]) if m]
        steady = statistics.median(seconds[1:]) if len(seconds) > 1 else None
        out.append({"replicates": count, "rounds": rounds, "round_s": seconds, "steady_round_s": steady,
                    "per_replicate_s": steady / count if steady else None, "wall_s": round(result["wall_s"], 1),
                    "peak_pss_mb": result["peak_pss_mb"], "loadavg": result["loadavg"]})
    return out


def rounds_trained(run_dir: Path) -> int:
    """The rounds a finished run trained: its plateau or ceiling round (summary.json)."""
    summary = json.loads((run_dir / "summary.json").read_text())
    return int((summary.get("stopped") or {}).get("round", summary["rounds"]))


def whole_grid(grid_file: Path, rounds: int, env: dict[str, str], fixed: bool = False) -> dict:
    """The grid through `./run.sh study` at `rounds` rounds (`fixed`: every run to the last round,
    stop-patience 0). Its CPU seconds: the Ray actors' (the clients' work for every replicate, with
    their messaging) and every other process's (SuperLink, ServerApp, CLI, reports)."""
    scratch = Path(tempfile.mkdtemp(prefix="fairfl-bench-study-"))
    config = f"num-server-rounds={rounds}" + (" stop-patience=0" if fixed else "")
    try:
        result = run_tagged(["bash", str(REPO / "run.sh"), "study", "--grid", str(grid_file), "--out",
                             str(scratch / "study"), "--run-config", config], env)
        runs = pd.read_csv(scratch / "study" / "runs.csv", dtype=str, keep_default_na=False)
        trained = sum(rounds_trained(scratch / "study" / d) for d in runs["run_dir"])
    finally:
        shutil.rmtree(scratch)
    return {"rounds": rounds, "fixed": fixed, "runs": len(runs), "completed": int((runs["status"] == "completed").sum()),
            "replicate_rounds": trained, "federations": runs["federation"].nunique(),
            "wall_s": round(result["wall_s"], 1), "actor_cpu_s": result["actor_cpu_s"],
            "other_cpu_s": result["other_cpu_s"], "peak_pss_mb": result["peak_pss_mb"], "loadavg": result["loadavg"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=Path, default=REPO / "analysis" / "grids" / "paper.toml")
    parser.add_argument("--rounds", type=int, default=20, help="rounds of the whole grid (0: skip it)")
    parser.add_argument("--scaling", default="1,5,25,65", help="replicates per federation to time ('' : skip)")
    parser.add_argument("--scaling-rounds", type=int, default=4)
    parser.add_argument("--fixed", action="store_true", help="the whole grid without early stopping (stop-patience 0)")
    parser.add_argument("--json", action="store_true", help="print every figure as one JSON line at the end")
    args = parser.parse_args(argv)
    env = {**os.environ, "FAIRFL_VENV": os.environ.get("FAIRFL_VENV", sys.prefix), "FAIRFL_NO_REPORT": "1"}
    counts = [int(c) for c in args.scaling.split(",") if c.strip()]
    figures = {"scaling": scaling(args.grid, counts, args.scaling_rounds, env) if counts else [],
               "grid": whole_grid(args.grid, args.rounds, env, args.fixed) if args.rounds else None}
    for row in figures["scaling"]:
        print(f"R={row['replicates']:3d}: steady round {row['steady_round_s']} s, "
              f"{row['per_replicate_s'] and round(row['per_replicate_s'], 3)} s per replicate, "
              f"peak {row['peak_pss_mb']} MB, load {row['loadavg']}")
    if figures["grid"]:
        g = figures["grid"]
        print(f"grid: {g['runs']} runs ({g['completed']} completed), ceiling {g['rounds']} rounds"
              f"{' (fixed)' if g['fixed'] else ''}, {g['replicate_rounds']} replicate-rounds in {g['federations']} "
              f"federation(s): {g['wall_s']} s, CPU {g['actor_cpu_s']} s in actors and {g['other_cpu_s']} s in other "
              f"processes, peak {g['peak_pss_mb']} MB, load {g['loadavg']}")
    if args.json:
        print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
