"""Cost of one local SGD step: the project's numpy trainer against the usual torch idiom.

Run `python -m benchmarks.local_step [--json]`. Per task it times (a) `train_sgd`, (b) the
textbook torch loop (TensorDataset + DataLoader(shuffle=True) + autograd + optim.SGD) and
(c) torch autograd over pre-shuffled index slices (`train_sgd_torch`), on the same synthetic
data. Rounds of (a), (b), (c) are interleaved and the best round of each is kept, so load
from other processes on a shared machine hits all three alike and inflates none.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from core.params import Params
from core.torch_model import init_params, to_torch
from core.tasks import TASKS
from clients.torch_reference import train_sgd_torch
from clients.training import train_sgd

ROWS = 20_000
BATCH = 32
LR = 0.01
ROUNDS = 7
EPOCHS = {"numpy": 8, "torch_dataloader": 1, "torch_slices": 1}  # per round


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


def methods(params: Params, X: np.ndarray, y: np.ndarray) -> dict[str, Callable[[int], object]]:
    """Each contender as a function of the number of epochs, all from the same start."""
    rng = np.random.default_rng(0)
    return {
        "numpy": lambda e: train_sgd(params, X, y, lr=LR, epochs=e, batch_size=BATCH, rng=rng),
        "torch_dataloader": lambda e: torch_dataloader_epochs(params, X, y, e),
        "torch_slices": lambda e: train_sgd_torch(
            params, X, y, lr=LR, epochs=e, batch_size=BATCH, rng=rng
        ),
    }


def time_task(task: str) -> dict[str, float]:
    """Best-of-rounds microseconds per step for each method on one task's model size."""
    width, hidden = TASKS[task].width, TASKS[task].hidden
    rng = np.random.default_rng(0)
    X = (rng.random((ROWS, width)) < 0.15).astype(np.float32)
    y = (rng.random(ROWS) < 0.4).astype(np.float32)
    runs = methods(init_params(width, hidden, seed=0), X, y)
    steps_per_epoch = -(-ROWS // BATCH)
    for run in runs.values():  # warm-up: allocator, BLAS, torch dispatch caches
        run(1)
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(ROUNDS):
        for name, run in runs.items():
            start = time.perf_counter()
            run(EPOCHS[name])
            elapsed = time.perf_counter() - start
            best[name] = min(best[name], elapsed / (EPOCHS[name] * steps_per_epoch) * 1e6)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args()

    torch.set_num_threads(1)
    print(f"torch threads: {torch.get_num_threads()} (set to 1 for fairness); "
          "train_sgd holds numpy's BLAS to 1 thread itself")
    print(f"{ROWS} synthetic rows, batch {BATCH}, best of {ROUNDS} interleaved rounds\n")
    labels = {
        "numpy": "(a) train_sgd (fused numpy)",
        "torch_dataloader": "(b) torch DataLoader + autograd",
        "torch_slices": "(c) torch autograd, pre-shuffled",
    }
    print(f"{'task':<11} {'method':<34} {'us/step':>9} {'samples/s':>11}")
    summary: dict[str, float | int] = {"torch_threads": 1, "rows": ROWS, "batch_size": BATCH}
    for task in TASKS:
        us = time_task(task)
        for name, label in labels.items():
            print(f"{task:<11} {label:<34} {us[name]:>9.1f} {BATCH / us[name] * 1e6:>11,.0f}")
            summary[f"us_per_step_{name}_{task}"] = round(us[name], 2)
        speedup = us["torch_dataloader"] / us["numpy"]
        print(f"{task:<11} speedup (b)/(a) = {speedup:.1f}x, "
              f"(c)/(a) = {us['torch_slices'] / us['numpy']:.1f}x\n")
        summary[f"speedup_{task}"] = round(speedup, 2)
    if args.json:
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
