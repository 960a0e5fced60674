"""What a fresh worker process pays before its first kernel runs: import and first calls, with
numba's on-disk cache cold (an empty cache directory: everything compiles) and warm (the same
directory again: everything loads).

Run `python -m benchmarks.kernel_startup [--json]`. Each measurement is its own subprocess, as a
Ray actor is; cold and warm runs alternate, so load from other processes hits both alike.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
REPEATS = 2

# Runs in the subprocess: seconds for the import and for the first call of each kernel family,
# in the order a FedAvg client meets them, then Per-FedAvg's.
PROBE = r"""
import json, time
start = time.perf_counter()
import numpy as np
from clients import kernels
seconds = {"import": time.perf_counter() - start}
rng = np.random.default_rng(0)
tables = [np.vstack([np.zeros((1, w)), np.eye(w)]).astype(np.float32) for w in (9, 24, 5)]
data = kernels.sparse_from_tables(tables, [rng.integers(0, len(t), 500) for t in tables],
                                  (rng.random(500) < 0.4).astype(np.float32))
params = {"fc1.weight": np.zeros((32, data.width), np.float32), "fc1.bias": np.zeros(32, np.float32),
          "fc2.weight": np.zeros((1, 32), np.float32), "fc2.bias": np.zeros(1, np.float32)}
group = (rng.random(500) < 0.5).astype(np.int8)
calls = {
    "train_sgd": lambda: kernels.train_sgd(params, data, lr=0.1, epochs=1, batch_size=32, rng=rng),
    "evaluate": lambda: kernels.evaluate(params, data, {"sex": group}),
    "score_models": lambda: kernels.score_models([params, params], data, group, "sp"),
    "meta_train": lambda: kernels.meta_train(params, data, alpha=0.1, beta=0.1, epochs=1, batch_size=32, rng=rng),
    "adapt": lambda: kernels.adapt(params, data, steps=5, lr=0.1, batch_size=32, rng=rng),
}
for name, call in calls.items():
    t = time.perf_counter()
    call()
    seconds[name] = time.perf_counter() - t
seconds["total"] = time.perf_counter() - start
seconds["cpu_total"] = time.process_time()  # the process's CPU seconds: what load does not inflate
print(json.dumps(seconds))
"""


def probe(cache_dir: str) -> dict[str, float]:
    env = {**os.environ, "NUMBA_CACHE_DIR": cache_dir, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=REPO, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args()
    runs: dict[str, list[dict[str, float]]] = {"cold": [], "warm": []}
    for _ in range(REPEATS):
        with tempfile.TemporaryDirectory(prefix="fairfl-numba-") as cache_dir:
            for state in ("cold", "warm"):
                before = loadavg()
                seconds = probe(cache_dir)
                runs[state].append(seconds)
                steps = ", ".join(f"{k} {v:.2f}" for k, v in seconds.items())
                print(f"{state}: {steps} s (load {before:.2f} -> {loadavg():.2f})")
    summary = {f"{state}_{key}_s": round(min(r[key] for r in rs), 2)
               for state, rs in runs.items() for key in ("total", "cpu_total")}
    print(f"best totals: cold {summary['cold_total_s']} s ({summary['cold_cpu_total_s']} CPU s), "
          f"warm {summary['warm_total_s']} s ({summary['warm_cpu_total_s']} CPU s)")
    if args.json:
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
