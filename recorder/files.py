"""The results directory of a run: config.json, counts.csv, metrics.csv, summary.json (+ extras).

A CSV grows by whole rounds: a round's rows are appended with one write, and the checkpoint
written after them records every CSV's byte size. Rows past those sizes belong to a round
that did not complete; a resumed run cuts the CSVs back to them, so no round is written twice
or in part. A JSON file (and the checkpoint) is replaced whole (a temporary file, then a
rename), so a crash leaves the old file or the new one. A round's writes are not fsynced (that
cost more than all the rest of a replicate's round): a killed process loses nothing that was
written, a machine crash may lose the rounds the filesystem had not flushed (a resume then names
the file that is short). A finished run's CSVs are fsynced once, before its summary.json.
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

PACKAGES = ("flwr", "ray", "torch", "numpy", "pandas", "pyarrow", "folktables", "scipy", "numba", "llvmlite")
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


TMP_SUFFIX = ".tmp"


class ResultsError(ValueError):
    """A results directory that cannot be read or continued; the message names the file at fault."""


def write_atomic(path: Path, data: bytes, durable: bool = True) -> None:
    """Replace `path` by `data` all at once: a reader (or a crash) sees the old file or the new one.

    `durable`: fsync the file and its directory, so a machine crash cannot lose it either."""
    tmp = path.with_name(path.name + TMP_SUFFIX)
    with open(tmp, "wb") as handle:
        handle.write(data)
        if durable:
            handle.flush()
            os.fsync(handle.fileno())
    os.replace(tmp, path)
    if durable:
        _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    handle = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically."""
    write_atomic(path, (json.dumps(_clean(obj), indent=2, sort_keys=False) + "\n").encode())


def read_json(path: Path) -> Any:
    """A JSON file of a results directory, or a ResultsError naming it."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ResultsError(f"cannot read '{path}': {err}") from err


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

    def read_config(self) -> dict[str, Any]:
        return read_json(self.directory / "config.json")

    def append(self, name: str, frame: pd.DataFrame) -> None:
        """Add one round's rows to `name` (header on first write) in one write."""
        path = self.directory / name
        with open(path, "ab") as handle:
            handle.write(frame.to_csv(header=not handle.tell(), index=False, lineterminator="\n").encode())

    def sync(self) -> None:
        """fsync every CSV (and the directory): a finished run's files survive a machine crash."""
        for path in sorted(self.directory.glob("*.csv")):
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
        _fsync_directory(self.directory)

    def csv_sizes(self) -> dict[str, int]:
        """Byte size of every CSV file: where a resumed run picks up writing."""
        return {p.name: p.stat().st_size for p in sorted(self.directory.glob("*.csv"))}

    def check_sizes(self, sizes: dict[str, int]) -> None:
        """Refuse to continue from `sizes` if a CSV is missing or shorter than that."""
        for name, size in sizes.items():
            path = self.directory / name
            have = path.stat().st_size if path.exists() else 0
            if have < size:
                raise ResultsError(
                    f"'{path}' has {have} bytes but the checkpoint recorded {size}; "
                    "the results directory was changed after the run wrote it"
                )

    def roll_back(self, sizes: dict[str, int]) -> None:
        """Return the files to their state at a checkpoint: CSVs cut back to `sizes` (files not
        listed dropped), no summary.json, no leftover temporaries.

        Rows written after the checkpoint belong to a round that will run again.
        """
        self.check_sizes(sizes)
        (self.directory / "summary.json").unlink(missing_ok=True)
        for tmp in self.directory.glob(f"*{TMP_SUFFIX}"):
            tmp.unlink()
        for path in self.directory.glob("*.csv"):
            if path.name not in sizes:
                path.unlink()
            elif path.stat().st_size > sizes[path.name]:
                write_atomic(path, path.read_bytes()[: sizes[path.name]])

    def write_summary(self, summary: dict[str, Any]) -> None:
        """summary.json, which marks the run finished, once its CSVs are on disk."""
        self.sync()
        write_json(self.directory / "summary.json", summary)
