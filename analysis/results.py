"""The results directory of a run: config.json, counts.csv, metrics.csv, summary.json (+ extras).

Each file is written whole (JSON, via a temporary file and a rename) or a whole round at a
time (CSV appends), so readers never see half a row.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

PACKAGES = ("flwr", "ray", "torch", "numpy", "pandas", "pyarrow", "folktables", "scipy")
COUNTS_COLUMNS = ["round", "state", "cluster", "attribute", "group", "n", "tp", "fp", "tn", "fn"]
METRICS_COLUMNS = ["round", "state", "cluster", "attribute", "metric", "value"]


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that shape the numbers, plus Python's."""
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_commit() -> str:
    """The checkout's commit, or FAIRFL_GIT_COMMIT (set by run.sh) when running from a Flower app copy."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        out = None
    if out is not None and out.returncode == 0:
        return out.stdout.strip()
    return os.environ.get("FAIRFL_GIT_COMMIT", "unavailable")


def _clean(value: Any) -> Any:
    """JSON has no NaN: write null instead, so every JSON parser can read the files."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically: a reader sees the old file or the new one, never a part."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(_clean(obj), indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


class ResultsWriter:
    """Appends whole rounds to the run's CSV files and writes its JSON files."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @staticmethod
    def check_free(directory: Path) -> None:
        """Refuse to mix two runs in one directory (checked before any training)."""
        if directory.exists() and any(directory.iterdir()):
            raise FileExistsError(
                f"results-dir '{directory}' already exists and is not empty; choose a new one"
            )

    def start(self, config: dict[str, Any]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        write_json(self.directory / "config.json", config)

    def append(self, name: str, frame: pd.DataFrame) -> None:
        """Append one round's rows to `name` (header on first write), flushed to disk."""
        path = self.directory / name
        new = not path.exists()
        with open(path, "a", newline="") as handle:
            frame.to_csv(handle, header=new, index=False, lineterminator="\n")
            handle.flush()
            os.fsync(handle.fileno())

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_json(self.directory / "summary.json", summary)
