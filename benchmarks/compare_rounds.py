"""`./run.sh compare` timed: its wall time, and every strategy's steady round against FedAvg's,
all measured in this one invocation.

Run `python -m benchmarks.compare_rounds [--json] [--strategies 'fedavg perfedavg ...']
[--rounds N] [--data PATH]`. It runs `./run.sh compare` on the 46-state parquet with each
strategy's study settings (run.sh's, as the user gets them) for N rounds, stamping every line of
its output with this machine's clock as it arrives. Per strategy it reports:

- `startup_s`: from the run's start (the previous run's end, or the command's start) to its
  ServerApp's `[strategy] N clients` line: `flwr run`, the SuperLink, the app install;
- `round1_s` and the steady rounds (2..N), from the server's own `round N | ... | X s` lines;
  round 1 also pays Ray's start-up and every actor's first data load;
- `vs_fedavg`: its median steady round over FedAvg's (the baseline, always run first).

The 1-minute load average is recorded before and after.
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
import time
from pathlib import Path

from benchmarks.round import DEFAULT_DATA, ROUND_SECONDS, loadavg

REPO = Path(__file__).resolve().parent.parent
HEADER = re.compile(r"\[([\w:-]+)\] \d+ clients, \d+ rounds")
FINISHED = re.compile(r"^results: ")
REPORT = re.compile(r"^report: (\S+)")
DEFAULT_STRATEGIES = "fedavg perfedavg ifca fair-ifca"


def timed_lines(command: list[str], env: dict) -> tuple[list[tuple[float, str]], float, int]:
    started = time.monotonic()
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append((time.monotonic() - started, line.rstrip("\n")))
    code = proc.wait()
    return lines, time.monotonic() - started, code


def per_strategy(lines: list[tuple[float, str]]) -> dict[str, dict]:
    """Each run's start-up, round 1 and steady rounds, from the stamped console lines."""
    runs: dict[str, dict] = {}
    current, run_start = None, 0.0
    for stamp, text in lines:
        if (header := HEADER.search(text)) is not None:
            current = header.group(1)
            runs[current] = {"startup_s": round(stamp - run_start, 1), "rounds_s": []}
        elif current is not None and (found := ROUND_SECONDS.search(text)) is not None:
            runs[current]["rounds_s"].append(float(found.group(2)))
        elif current is not None and FINISHED.search(text):
            runs[current]["run_s"] = round(stamp - run_start, 1)
            current, run_start = None, stamp
    for run in runs.values():
        run["round1_s"] = run["rounds_s"][0]
        run["steady_round_s"] = statistics.median(run["rounds_s"][1:])
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    parser.add_argument("--strategies", default=DEFAULT_STRATEGIES, help="space-separated; fedavg first")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    if args.strategies.split()[0] != "fedavg":
        parser.error("--strategies must start with fedavg, the baseline")
    env = {**os.environ, "FAIRFL_VENV": os.environ.get("FAIRFL_VENV", sys.prefix)}
    config = f'data-source="table" data-path="{args.data.resolve()}" num-server-rounds={args.rounds}'
    command = [str(REPO / "run.sh"), "compare", "--strategies", args.strategies, "--run-config", config]
    before = loadavg()
    lines, wall, code = timed_lines(command, env)
    report = next((REPORT.search(text) for _, text in lines if REPORT.search(text)), None)
    if report is not None:  # compare's results directory: only the timings are wanted here
        shutil.rmtree(Path(report.group(1)).parent.parent, ignore_errors=True)
    if code != 0:
        raise SystemExit("\n".join(text for _, text in lines[-40:]) + f"\n./run.sh compare exited {code}")
    runs = per_strategy(lines)
    base = runs["fedavg"]["steady_round_s"]
    for run in runs.values():
        run["vs_fedavg"] = round(run["steady_round_s"] / base, 2)
    summary = {"command": f"./run.sh compare --strategies '{args.strategies}' --run-config '{config}'",
               "compare_wall_s": round(wall, 1), "loadavg": [before, loadavg()], "strategies": runs}
    print(f"./run.sh compare: {wall:.0f} s wall, load {summary['loadavg']}")
    for name, run in runs.items():
        print(f"  {name:12s} start-up {run['startup_s']:5.1f} s  round 1 {run['round1_s']:5.1f} s  "
              f"steady {run['steady_round_s']:5.2f} s  ({run['vs_fedavg']}x FedAvg)  run {run.get('run_s', 0):.0f} s")
    if args.json:
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
