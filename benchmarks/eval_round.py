"""What evaluating a round costs one replicate, in process: this checkout against a baseline
commit, both measured in this invocation.

Run `python -m benchmarks.eval_round [--json] [--strategies 'fedavg ifca ...'] [--rounds N]
[--repeats K] [--baseline REV] [--profile STRATEGY]`. Each side runs in its own subprocess from
its own tree (the baseline from a `git archive` of REV), with this environment's packages: per
strategy, one replicate over every state of the 46-state parquet under the paper preset, through
the real ServerApp loop (`fl_app.setup.run_federation`: algorithms, recorder, results files) and
the real ClientApp, delivered in process (no Flower transport). A run of N rounds evaluating every
round and one evaluating only the last differ by N - 1 evaluations, so their CPU times give an
evaluated round's extra cost per replicate, client and server together. Training runs 1 local
epoch (the study's FedAvg-like settings run 10): what an evaluation computes does not depend on it,
and less training leaves less of the shared machine's noise in the difference. Both runs go in turns
(every-round first), `--repeats` times; the median CPU time of each is kept (the least swung
with one outlier, at load 4-10, from a run disturbed less than its pair). The baseline side runs first, then this checkout; each
first runs each strategy once untimed (data loaded, kernels loaded). `--rounds` must exceed flhc's
warm-up rounds (3 under the paper preset).

Before those runs, each side times one replicate's evaluate part on one client (PA) through the
ClientApp's `_answer` (job, handler, reply records): the median of 7 blocks of 100, CPU seconds,
in 3 processes per side, alternating sides; the median of the 3 is kept. Being one process's
steady loop, it varies far less with the load than the runs' difference.

`--profile STRATEGY` instead prints this checkout's cProfile of that strategy's every-round run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.deploy_round import checkout
from benchmarks.round import DEFAULT_DATA, loadavg

REPO = Path(__file__).resolve().parent.parent
DEFAULT_BASELINE = "a890c55"  # main before this benchmark: the converged study's code
STRATEGIES = "fedavg ifca perfedavg ditto flhc"

PROBE = r"""
import cProfile, json, pstats, shutil, sys, tempfile, time
from pathlib import Path
from flwr.app import Context, Error, Message, RecordDict
from flwr.common.config import get_fused_config_from_dir
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity
from fl_app.client_app import app
from fl_app.setup import run_federation

data, strategies, rounds, repeats, profile = sys.argv[1], sys.argv[2].split(), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]


class Nodes(Grid):
    def __init__(self, raw, count):
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
        self.contexts = {1000 + i: Context(run_id=1, node_id=1000 + i, node_config={"partition-id": i},
                                           state=RecordDict(), run_config=raw) for i in range(count)}

    def get_node_ids(self):
        return list(self.contexts)

    def send_and_receive(self, messages, *, timeout=None):
        return [self.deliver(m) for m in messages]

    def deliver(self, message):
        try:
            return app(message, self.contexts[message.metadata.dst_node_id])
        except Exception as ex:
            return Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, repr(ex)), reply_to=message)

    def set_run(self, run): raise NotImplementedError
    @property
    def run(self): raise NotImplementedError
    def create_message(self, *a, **k): raise NotImplementedError
    def push_messages(self, messages): raise NotImplementedError
    def pull_messages(self, ids): raise NotImplementedError


def federation(strategy, rounds, eval_every):
    base = Path(tempfile.mkdtemp(prefix="fairfl-bench-eval-"))
    raw = get_fused_config_from_dir(Path.cwd(), {
        "strategy": strategy, "preset": "paper", "data-source": "table", "data-path": data, "local-epochs": 1,
        "num-server-rounds": rounds, "eval-every": eval_every, "results-dir": str(base / "run")})
    nodes = Nodes(raw, len(str(raw["states"]).split(",")) if raw["states"] else 46)
    cpu, wall = time.process_time(), time.perf_counter()
    try:
        run_federation(nodes, raw, base)
        return time.process_time() - cpu, time.perf_counter() - wall
    finally:
        shutil.rmtree(base, ignore_errors=True)


if profile:
    federation(profile, rounds, rounds)
    profiler = cProfile.Profile()
    profiler.runcall(federation, profile, rounds, 1)
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(45)
    pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
    sys.exit(0)
out = {}
for strategy in strategies:
    federation(strategy, rounds, rounds)  # untimed: data and kernels loaded (rounds > flhc's warm-up)
    every, last = [], []
    for _ in range(repeats):
        every.append(federation(strategy, rounds, 1))
        last.append(federation(strategy, rounds, rounds))
    out[strategy] = {"every_cpu_s": [e[0] for e in every], "last_cpu_s": [e[0] for e in last],
                     "every_wall_s": [e[1] for e in every], "last_wall_s": [e[1] for e in last]}
print(json.dumps(out))
"""


CLIENT_PROBE = r"""
import json, statistics, sys, time
from pathlib import Path
from flwr.app import ConfigRecord, Context, RecordDict
from flwr.common.config import get_fused_config_from_dir
import fl_app.client_app as client_app
from core.bundle import Part
from core.params import init_params, to_record

data, state, strategies = sys.argv[1], sys.argv[2], sys.argv[3].split()
out = {}
for strategy in strategies:
    raw = get_fused_config_from_dir(Path.cwd(), {"strategy": strategy, "preset": "paper", "data-source": "table",
                                                "data-path": data, "states": state})
    context = Context(run_id=1, node_id=1, node_config={"partition-id": 0}, state=RecordDict(), run_config=raw)
    params = init_params(54, 32, 0)
    message_type = {"perfedavg": "evaluate.perfedavg", "ditto": "evaluate.ditto"}.get(strategy, "evaluate")
    if strategy == "ditto":
        params = {**{"global." + k: v for k, v in params.items()}, **{"personal." + k: v for k, v in params.items()}}
    config = ConfigRecord({"server-round": 1, "source-kind": "table", "source-path": data, "states": state})
    part = Part("r0e", message_type, RecordDict({"arrays": to_record(params), "config": config}), {})
    assert "metrics" in client_app._answer(part, context)  # an answer, not an error; data loaded
    blocks = []
    for _ in range(7):
        started = time.process_time()
        for _ in range(100):
            client_app._answer(part, context)
        blocks.append((time.process_time() - started) / 100)
    out[strategy] = statistics.median(blocks)
print(json.dumps(out))
"""


def client_probe(tree: Path, data: Path, strategies: str, state: str = "PA") -> dict:
    """CPU seconds of one replicate's evaluate part on one client (`_answer`), median of 7 blocks of 100."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    proc = subprocess.run([sys.executable, "-c", CLIENT_PROBE, str(data), state, strategies], cwd=tree, env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"client probe in {tree} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def probe(tree: Path, data: Path, strategies: str, rounds: int, repeats: int, profile: str = "") -> dict | None:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    proc = subprocess.run([sys.executable, "-c", PROBE, str(data), strategies, str(rounds), str(repeats), profile],
                          cwd=tree, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"probe in {tree} failed:\n{proc.stderr[-3000:]}")
    if profile:
        print(proc.stdout)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def per_evaluation(figures: dict, rounds: int, unit: str) -> float:
    """An evaluated round's extra seconds: the medians' difference over the N - 1 extra evaluations."""
    return (statistics.median(figures[f"every_{unit}_s"]) - statistics.median(figures[f"last_{unit}_s"])) / (rounds - 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    parser.add_argument("--strategies", default=STRATEGIES)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline", default=DEFAULT_BASELINE)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--profile", default="", help="print the cProfile of this strategy's run (this checkout)")
    args = parser.parse_args()
    if args.rounds < 2:
        parser.error("--rounds must be at least 2 (the difference of N and 1 evaluated rounds)")
    data = args.data.resolve()
    if args.profile:
        probe(REPO, data, args.profile, args.rounds, 1, args.profile)
        return
    scratch = Path(tempfile.mkdtemp(prefix="fairfl-bench-evalround-"))
    sides: dict[str, dict] = {}
    try:
        trees = {"baseline": checkout(args.baseline, scratch / "baseline"), "current": REPO}
        before = loadavg()
        parts: dict[str, list[dict]] = {side: [] for side in trees}
        for _ in range(3):  # alternating, so both sides see the same load
            for side, tree in trees.items():
                parts[side].append(client_probe(tree, data, args.strategies))
        client_load = [before, loadavg()]
        for side, tree in trees.items():
            before = loadavg()
            client = {s: statistics.median(p[s] for p in parts[side]) for s in args.strategies.split()}
            sides[side] = {"client": client, "client_runs": parts[side], "client_loadavg": client_load,
                           "figures": probe(tree, data, args.strategies, args.rounds, args.repeats),
                           "loadavg": [before, loadavg()]}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    rows = {}
    for strategy in args.strategies.split():
        base, now = (per_evaluation(sides[s]["figures"][strategy], args.rounds, "cpu") for s in ("baseline", "current"))
        part = [sides[s]["client"][strategy] * 1e3 for s in ("baseline", "current")]
        rows[strategy] = {"baseline_cpu_s": round(base, 4), "current_cpu_s": round(now, 4),
                          "ratio": round(base / now, 2) if now > 0 else None,
                          "client_part_ms": [round(ms, 3) for ms in part], "client_ratio": round(part[0] / part[1], 2)}
        print(f"{strategy:10s} evaluated round, extra CPU per replicate: {base:.4f} s -> {now:.4f} s "
              f"({rows[strategy]['ratio']}x); one client's evaluate part: {part[0]:.3f} ms -> {part[1]:.3f} ms "
              f"({rows[strategy]['client_ratio']}x)")
    print(f"load: client parts {sides['current']['client_loadavg']}, baseline runs {sides['baseline']['loadavg']}, "
          f"current runs {sides['current']['loadavg']}")
    if args.json:
        print(json.dumps({"baseline": args.baseline, "rounds": args.rounds, "repeats": args.repeats, "rows": rows,
                          "sides": sides}))


if __name__ == "__main__":
    main()
