"""Time per round and peak memory as the federation grows: 51, 204 and 510 clients.

Run `python -m benchmarks.scale [--json] [--clients-per-state 1 4 10] [--rounds 3]`. Each size
is a real `./run.sh run` of FedAvg on synthetic data for all 51 folktables states, split into
`clients-per-state` seeded shards, so every size trains on exactly the same records: only the
number of clients (and of Flower messages) changes. Memory is the summed PSS of every
process the run starts (benchmarks/proctree.py). Ratios are against the first size, measured
in the same invocation. With `--json` the last line is one JSON object with every figure.
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
import uuid
from pathlib import Path

from benchmarks.proctree import TaggedSampler
from benchmarks.round import REPO, ROUND_LINE, TAG_NAME, loadavg

STATES = 51
SETTINGS = 'data-source="synthetic" local-epochs=1 lr=0.05'


def run_size(shards: int, rounds: int) -> dict[str, float]:
    """One sampled `./run.sh run` with `shards` clients per state; its round times and memory."""
    tag = uuid.uuid4().hex
    env = {**os.environ, "FAIRFL_VENV": os.environ.get("FAIRFL_VENV", sys.prefix), TAG_NAME: tag}
    scratch = Path(tempfile.mkdtemp(prefix="fairfl-scale-"))
    config = f'{SETTINGS} clients-per-state={shards} num-server-rounds={rounds} results-dir="{scratch / "r"}"'
    load_before = loadavg()
    try:
        with TaggedSampler(f"{TAG_NAME}={tag}".encode()) as sampler:
            proc = subprocess.run(["bash", str(REPO / "run.sh"), "run", "--run-config", config], cwd=REPO, env=env,
                                  capture_output=True, text=True)
    finally:
        shutil.rmtree(scratch)
    if proc.returncode != 0:
        raise RuntimeError(f"./run.sh run with clients-per-state={shards} failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    seconds = [float(m[3]) for m in map(ROUND_LINE.search, proc.stdout.splitlines()) if m]
    peak = sampler.peak()
    return {
        "clients": STATES * shards,
        "clients_per_state": shards,
        "round_1_s": seconds[0],
        "steady_round_s": statistics.mean(seconds[1:]),
        "peak_pss_mb": round(peak.pss_mb, 1),
        "peak_actor_pss_mb": round(peak.actor_pss_mb, 1),
        "loadavg": [load_before, loadavg()],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    parser.add_argument("--clients-per-state", type=int, nargs="+", default=[1, 4, 10])
    parser.add_argument("--rounds", type=int, default=3, help="at least 2 (round 1 includes start-up)")
    args = parser.parse_args(argv)
    sizes = [run_size(c, max(args.rounds, 2)) for c in args.clients_per_state]
    base = sizes[0]
    print("| clients | round 1 (s) | steady round (s) | x base | peak memory (MB, PSS) | x base | actors (MB) | load |")
    print("|---|---|---|---|---|---|---|---|")
    for s in sizes:
        s["round_ratio"] = round(s["steady_round_s"] / base["steady_round_s"], 2)
        s["memory_ratio"] = round(s["peak_pss_mb"] / base["peak_pss_mb"], 2)
        print(f"| {s['clients']} | {s['round_1_s']:.1f} | {s['steady_round_s']:.2f} | {s['round_ratio']} | "
              f"{s['peak_pss_mb']:.0f} | {s['memory_ratio']} | {s['peak_actor_pss_mb']:.0f} | "
              f"{s['loadavg'][0]:.2f} -> {s['loadavg'][1]:.2f} |")
    if args.json:
        print(json.dumps({"sizes": sizes}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
