"""Cost of one local SGD step: the project's compiled sparse kernel against the usual torch idiom.

Run `python -m benchmarks.local_step [--json]`. Per task it times (a) `clients.kernels.train_sgd`
(numba, on the sparse codes), (b) the textbook torch loop (TensorDataset + DataLoader(shuffle=True)
+ autograd + optim.SGD), (c) torch autograd over pre-shuffled index slices (`train_sgd_torch`) and
(d) the dense numpy trainer `train_sgd` (both in benchmarks/trainers.py), on the same synthetic one-hot data, and
Per-FedAvg's meta-training (`clients.kernels.meta_train`, both variants) against (a) per epoch.
Rounds of all methods are interleaved and the best round of each is kept, so load from other
processes on a shared machine hits all alike and inflates none. Rounds are timed in this
process's CPU time: on a busy machine the scheduler hands the cores to other processes for
much of a round's wall time (at load 6 on 2 cores a 10 ms round took 3x its CPU time), and on
an idle one the two agree. Every method runs in one thread (torch set to 1, BLAS held to 1).
The first kernel call (compile, or loading numba's on-disk cache) is timed on its own, in wall
time, before any round.

`--baseline REV` also loads `clients/kernels.py` as it was at git revision REV beside today's
and times its `train_sgd` in the same interleaved rounds: a before/after in one run (#26 compared
the CPU-independent kernels with the fast-math ones this way).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from benchmarks.trainers import train_sgd, train_sgd_torch
from clients import kernels
from core.params import Params, init_params
from core.tasks import TASKS, Numeric
from core.torch_model import to_torch

ROWS = 20_000
BATCH = 32
LR = 0.01
ROUNDS = 15
# Epochs per round: short rounds (about 10 ms for the kernels) so that the best of them finds a
# quiet moment on a shared machine; torch's cannot be shorter than one epoch (about 0.25 s).
EPOCHS = {
    "kernel": 4, "kernel_baseline": 4, "numpy": 1, "torch_dataloader": 1, "torch_slices": 1,
    "meta_first_order": 4, "meta_hessian_free": 4,
}
LABELS = {
    "kernel": "(a) kernels.train_sgd (numba, sparse)",
    "torch_dataloader": "(b) torch DataLoader + autograd",
    "torch_slices": "(c) torch autograd, pre-shuffled",
    "numpy": "(d) trainers.train_sgd (dense numpy)",
}


def torch_dataloader_epochs(params: Params, X: np.ndarray, y: np.ndarray, epochs: int) -> float:
    """The common torch training loop, as a tutorial would write it."""
    model = to_torch(params)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    loader = DataLoader(
        TensorDataset(torch.from_numpy(X), torch.from_numpy(y)), batch_size=BATCH, shuffle=True
    )
    total = 0.0
    for _ in range(epochs):
        total = 0.0
        for xb, yb in loader:
            optimizer.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(xb)
    return total / len(y)


def synthetic_split(task: str, rows: int = ROWS, seed: int = 0) -> kernels.SparseSplit:
    """Records with the task's feature structure: a one-hot block or one scaled number per feature."""
    rng = np.random.default_rng(seed)
    tables = []
    for feature in TASKS[task].features:
        if isinstance(feature, Numeric):
            tables.append((np.arange(1, 100, dtype=np.float32) / 100)[:, None])
        else:  # a row of zeros (a code outside the list) and one row per indicator
            tables.append(np.vstack([np.zeros((1, feature.width)), np.eye(feature.width)]).astype(np.float32))
    codes = [rng.integers(0, len(table), rows) for table in tables]
    return kernels.sparse_from_tables(tables, codes, (rng.random(rows) < 0.4).astype(np.float32))


def baseline_kernels(revision: str) -> ModuleType:
    """clients/kernels.py as it was at `revision`, loaded as its own module beside today's."""
    repo = Path(__file__).resolve().parent.parent
    source = subprocess.run(["git", "-C", str(repo), "show", f"{revision}:clients/kernels.py"], capture_output=True,
                            text=True, check=True).stdout
    path = Path(tempfile.mkdtemp(prefix="fairfl-baseline-")) / "baseline_kernels.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("baseline_kernels", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["baseline_kernels"] = module  # numba finds the module's cache locator by name
    spec.loader.exec_module(module)
    return module


def methods(params: Params, data: kernels.SparseSplit, baseline: ModuleType | None = None
            ) -> dict[str, Callable[[int], object]]:
    """Each contender as a function of the number of epochs, all from the same start."""
    rng = np.random.default_rng(0)
    X, y = data.dense(), data.y
    extra = {} if baseline is None else {
        "kernel_baseline": lambda e: baseline.train_sgd(params, data, lr=LR, epochs=e, batch_size=BATCH, rng=rng)}
    return {**extra,
        "kernel": lambda e: kernels.train_sgd(params, data, lr=LR, epochs=e, batch_size=BATCH, rng=rng),
        "numpy": lambda e: train_sgd(params, X, y, lr=LR, epochs=e, batch_size=BATCH, rng=rng),
        "torch_dataloader": lambda e: torch_dataloader_epochs(params, X, y, e),
        "torch_slices": lambda e: train_sgd_torch(params, X, y, lr=LR, epochs=e, batch_size=BATCH, rng=rng),
        "meta_first_order": lambda e: kernels.meta_train(
            params, data, alpha=LR, beta=LR, epochs=e, batch_size=BATCH, rng=rng, variant="first-order"
        ),
        "meta_hessian_free": lambda e: kernels.meta_train(
            params, data, alpha=LR, beta=LR, epochs=e, batch_size=BATCH, rng=rng, variant="hessian-free"
        ),
    }


def time_task(task: str, baseline: ModuleType | None = None) -> tuple[dict[str, float], float]:
    """Best-of-rounds microseconds per step (per batch of data, for meta-training) for each
    method on one task's model size, and the seconds of the very first kernel call."""
    data = synthetic_split(task)
    runs = methods(init_params(data.width, TASKS[task].hidden, seed=0), data, baseline)
    start = time.perf_counter()
    runs["kernel"](1)
    first_call = time.perf_counter() - start
    for run in runs.values():  # warm-up: the other kernels, allocator, BLAS, torch dispatch caches
        run(1)
    steps_per_epoch = -(-ROWS // BATCH)
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(ROUNDS):
        for name, run in runs.items():
            start = time.process_time()
            run(EPOCHS[name])
            elapsed = time.process_time() - start
            best[name] = min(best[name], elapsed / (EPOCHS[name] * steps_per_epoch) * 1e6)
    return best, first_call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    parser.add_argument("--baseline", metavar="REV", help="also time clients/kernels.py of this git revision")
    args = parser.parse_args()
    baseline = baseline_kernels(args.baseline) if args.baseline else None

    torch.set_num_threads(1)
    print(f"torch threads: {torch.get_num_threads()} (set to 1 for fairness); "
          "train_sgd holds numpy's BLAS to 1 thread itself")
    print(f"{ROWS} synthetic rows, batch {BATCH}, best of {ROUNDS} interleaved rounds, CPU time\n")
    print(f"{'task':<11} {'method':<40} {'us/step':>9} {'samples/s':>12}")
    summary: dict[str, float | int] = {"torch_threads": 1, "rows": ROWS, "batch_size": BATCH}
    for task in TASKS:
        us, first_call = time_task(task, baseline)
        for name, label in LABELS.items():
            print(f"{task:<11} {label:<40} {us[name]:>9.2f} {BATCH / us[name] * 1e6:>12,.0f}")
            summary[f"us_per_step_{name}_{task}"] = round(us[name], 2)
        speedup, vs_numpy = us["torch_dataloader"] / us["kernel"], us["numpy"] / us["kernel"]
        meta = {v: us[f"meta_{v}"] / us["kernel"] for v in ("first_order", "hessian_free")}
        print(f"{task:<11} speedup (b)/(a) = {speedup:.1f}x, (c)/(a) = {us['torch_slices'] / us['kernel']:.1f}x, "
              f"(d)/(a) = {vs_numpy:.1f}x; first kernel call {first_call:.2f} s")
        print(f"{task:<11} Per-FedAvg epoch / FedAvg epoch: first-order {meta['first_order']:.2f}, "
              f"hessian-free {meta['hessian_free']:.2f}\n")
        summary[f"speedup_{task}"] = round(speedup, 2)
        summary[f"speedup_vs_numpy_{task}"] = round(vs_numpy, 2)
        summary[f"us_per_step_{task}"] = round(us["kernel"], 2)
        summary[f"perfedavg_over_fedavg_first_order_{task}"] = round(meta["first_order"], 3)
        summary[f"perfedavg_over_fedavg_hessian_free_{task}"] = round(meta["hessian_free"], 3)
        summary[f"first_kernel_call_s_{task}"] = round(first_call, 3)
        if baseline is not None:
            ratio = us["kernel"] / us["kernel_baseline"]
            print(f"{task:<11} kernels.train_sgd {us['kernel']:.2f} us/step against {us['kernel_baseline']:.2f} at "
                  f"{args.baseline}: {ratio:.2f}x its time\n")
            summary[f"us_per_step_kernel_baseline_{task}"] = round(us["kernel_baseline"], 2)
            summary[f"kernel_over_baseline_{task}"] = round(ratio, 3)
    if args.json:
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
