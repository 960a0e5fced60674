"""Seconds per round on Flower's deployment engine (3 synthetic clients on loopback): this
checkout against a baseline commit, both measured in this invocation.

Run `python -m benchmarks.deploy_round [--json] [--rounds N] [--repeats K] [--baseline REV]`.
Each side runs `python -m fl_app.deploy --insecure` with one run config (the reliability
issue's: AL, CA, WY, synthetic, 1 local epoch). The baseline runs from a `git archive` of REV,
so its own code runs, with this environment's packages; the two sides alternate, baseline
first, `--repeats` times. A round's time is the server's own `round N | ... | X s` line; rounds
after the first are steady (round 1 also pays the first data load, and its message asks each
node which client it serves). The 1-minute load average is recorded before and after every deploy.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.round import ROUND_SECONDS, loadavg

REPO = Path(__file__).resolve().parent.parent
RUN_CONFIG = 'states="AL,CA,WY" data-source="synthetic" local-epochs=1 num-server-rounds={rounds} results-dir="{results}"'
DEFAULT_BASELINE = "10fa880"  # main before the polling grid and the on-disk data cache


def checkout(rev: str, into: Path) -> Path:
    """The tree of `rev`, extracted (no .git): the code the baseline side runs."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def deploy(tree: Path, rounds: int, scratch: Path) -> dict:
    """One deploy from `tree`: its steady round seconds, wall time and load averages."""
    results = scratch / f"results-{time.monotonic_ns()}"
    config = RUN_CONFIG.format(rounds=rounds, results=results)
    before, started = loadavg(), time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "fl_app.deploy", "--insecure", "--run-config", config],
                          cwd=tree, capture_output=True, text=True, timeout=1800)
    wall = time.monotonic() - started
    if proc.returncode != 0:
        raise RuntimeError(f"deploy from {tree} exited {proc.returncode}\n{proc.stderr[-3000:]}")
    rounds_s = {int(m.group(1)): float(m.group(2)) for m in ROUND_SECONDS.finditer(proc.stdout)}
    return {"rounds_s": [rounds_s[r] for r in sorted(rounds_s)], "wall_s": round(wall, 1),
            "loadavg": [before, loadavg()]}


def steady(runs: list[dict]) -> float:
    return statistics.median(s for run in runs for s in run["rounds_s"][1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--baseline", default=DEFAULT_BASELINE, help="git revision measured as the baseline")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="fairfl-bench-deploy-"))
    try:
        trees = {"baseline": checkout(args.baseline, scratch / "baseline"), "current": REPO}
        runs: dict[str, list[dict]] = {"baseline": [], "current": []}
        for _ in range(args.repeats):
            for side, tree in trees.items():
                runs[side].append(deploy(tree, args.rounds, scratch))
                print(f"{side:8s} rounds {runs[side][-1]['rounds_s']} s, load {runs[side][-1]['loadavg']}",
                      file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    summary = {
        "baseline": args.baseline, "rounds": args.rounds, "repeats": args.repeats,
        "steady_round_s_baseline": steady(runs["baseline"]), "steady_round_s": steady(runs["current"]),
        "runs": runs,
    }
    summary["speedup"] = round(summary["steady_round_s_baseline"] / summary["steady_round_s"], 2)
    print(f"steady deployment round: {summary['steady_round_s']:.1f} s (baseline {args.baseline}: "
          f"{summary['steady_round_s_baseline']:.1f} s), {summary['speedup']}x")
    if args.json:
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
