"""Record the reference results that the byte-identical test compares against.

`python -m tests.reference.record` runs each strategy of `CASES` on a fixed small synthetic
federation through the in-process grid (the real ServerApp logic and ClientApp handlers) and
keeps its metrics.csv, counts.csv and clusters.csv under tests/reference/<case>/. Run it only
when an issue says results may change, and say so in the commit.
"""

from __future__ import annotations

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
}


def run_case(name: str, results: Path) -> Path:
    """The case's results directory after an in-process run."""
    from tests.conftest import run_in_process

    return run_in_process({**COMMON, **CASES[name]}, results / name)


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        for name in CASES:
            out = run_case(name, Path(tmp))
            target = HERE / name
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir()
            for file in FILES:
                if (out / file).exists():
                    shutil.copyfile(out / file, target / file)
            print(f"{name}: {sorted(p.name for p in target.iterdir())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
