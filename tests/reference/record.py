"""Record the reference results that the byte-identical tests compare against.

`python -m tests.reference.record` runs each case of `CASES` (every strategy, and FedAvg
under the paper encoding) on a fixed small synthetic federation through the in-process grid
(the real ServerApp logic and ClientApp handlers) and keeps its metrics.csv, counts.csv and
clusters.csv under tests/reference/<case>/. Run it only when an issue says results may
change, and say so in the commit. `--out DIR` writes them under DIR instead (how
tests/test_cpu_independence.py runs them in a process that computes as another CPU would).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
FILES = ("metrics.csv", "counts.csv", "clusters.csv")
COMMON = {
    "states": "AL,CA,WY", "data-source": "synthetic", "synthetic-rows": 1000, "num-server-rounds": 3,
    "local-epochs": 2, "lr": 0.3, "batch-size": 16, "seed": 0,
}
CASES: dict[str, dict] = {
    "fedavg": {"strategy": "fedavg"},
    "perfedavg": {"strategy": "perfedavg", "local-epochs": 4, "meta-lr": 1.0, "maml-variant": "hessian-free"},
    "ifca": {"strategy": "ifca", "k": 2, "warmup-rounds": 1},
    "fair-ifca": {"strategy": "fair-ifca", "k": 2, "lambda": 1.0},
    "flhc": {"strategy": "flhc", "k": 2, "warmup-rounds": 1},
    "fair-flhc": {"strategy": "fair-flhc", "k": 2, "warmup-rounds": 1, "lambda": 1.0},
    "ditto": {"strategy": "ditto", "ditto-mu": 0.1},
    "local": {"strategy": "local"},
    "centralized": {"strategy": "centralized", "local-epochs": 1},
    "fedavg-paper": {"strategy": "fedavg", "encoding": "paper", "train-rows": 400, "test-rows": 300, "val-rows": 300},
}


def run_case(name: str, results: Path) -> Path:
    """The case's results directory after an in-process run."""
    from tests.conftest import run_in_process

    return run_in_process({**COMMON, **CASES[name]}, results / name)


def record(target_root: Path) -> None:
    """Every case's files under target_root/<case>/, replacing what was there."""
    with tempfile.TemporaryDirectory() as tmp:
        for name in CASES:
            out = run_case(name, Path(tmp))
            target = target_root / name
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True)
            for file in FILES:
                if (out / file).exists():
                    shutil.copyfile(out / file, target / file)
            print(f"{name}: {sorted(p.name for p in target.iterdir())}")


def main() -> int:
    parser = argparse.ArgumentParser(description="Record the byte-identical reference results.")
    parser.add_argument("--out", type=Path, default=HERE, help="where to write them (default: tests/reference)")
    record(parser.parse_args().out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
