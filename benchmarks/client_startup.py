"""What a fresh ClientApp process pays before its first message's work, as a Ray actor starting
or a deployment-engine `flwr-clientapp` process (one per message) pays it: this checkout against
a baseline commit, both measured in this invocation.

Run `python -m benchmarks.client_startup [--json] [--repeats K] [--baseline REV]`. Each
measurement is its own subprocess, run from that side's tree (the baseline from a
`git archive` of REV): import `fl_app.client_app`, then load one state's data from the
46-state parquet (`state_codes`, PA) as the first message does. It reports wall and CPU
seconds for each step, the process's peak RSS, and whether torch was imported. Sides alternate,
baseline first; the best of `--repeats` is kept. The default baseline is main when the
performance issue was filed: its ClientApp imported torch, and it had no on-disk data cache.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.deploy_round import checkout
from benchmarks.round import DEFAULT_DATA, loadavg

REPO = Path(__file__).resolve().parent.parent
DEFAULT_BASELINE = "b832381"  # main when the performance issue was filed

PROBE = r"""
import json, resource, sys, time
start, cpu = time.perf_counter(), time.process_time()
import fl_app.client_app
from clients.data import state_codes
from clients.sources import Source
imported, imported_cpu = time.perf_counter(), time.process_time()
state_codes(Source("table", sys.argv[1], ("PA",)), "income", "PA", 0, 0)
print(json.dumps({
    "import_s": imported - start, "import_cpu_s": imported_cpu - cpu,
    "data_s": time.perf_counter() - imported, "data_cpu_s": time.process_time() - imported_cpu,
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "torch": "torch" in sys.modules,
}))
"""


def probe(tree: Path, data: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run([sys.executable, "-c", PROBE, str(data)], cwd=tree, env=env, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--baseline", default=DEFAULT_BASELINE)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="fairfl-bench-startup-"))
    runs: dict[str, list[dict]] = {"baseline": [], "current": []}
    before = loadavg()
    try:
        trees = {"baseline": checkout(args.baseline, scratch / "baseline"), "current": REPO}
        for tree in trees.values():
            probe(tree, args.data.resolve())  # warms numba's cache and, for this checkout, the data cache
        for _ in range(args.repeats):
            for side, tree in trees.items():
                runs[side].append(probe(tree, args.data.resolve()))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    best = {side: {key: round(min(r[key] for r in rs), 3) for key in rs[0] if key != "torch"} | {"torch": rs[0]["torch"]}
            for side, rs in runs.items()}
    summary = {"baseline": args.baseline, "repeats": args.repeats, "loadavg": [before, loadavg()], "best": best,
               "runs": runs}
    for side, figures in best.items():
        print(f"{side:8s} import {figures['import_s']:.2f} s ({figures['import_cpu_s']:.2f} CPU), first data load "
              f"{figures['data_s']:.3f} s, peak RSS {figures['peak_rss_mb']:.0f} MB, torch imported: {figures['torch']}")
    if args.json:
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
