"""Each state's compact codes on disk, so a fresh process loads them in milliseconds.

Flower 1.42's deployment engine starts a new `flwr-clientapp` process for every message, and
each one would read its source again (a table, or a state's folktables CSV) and re-encode its
state. An entry is keyed by everything the codes depend on: the source and its file's size and
modification time, task, encoding, state, seed, synthetic rows and reversed states, the partition
sizes, the numpy and pandas versions, and the bytes of the modules that build codes. A changed
file or encoder therefore never meets a stale entry. Entries are written to a temporary file and
renamed into place, so concurrent processes never read half of one, and read without pickle.

Entries live in `codes/` of the user's cache (`core.cache_dir`), never beside the data: a data
folder is input, often shared, and runs once filled one with 37 MB of entries. Nothing is ever
evicted (`./run.sh clean-cache` empties it). A cache that cannot be written is skipped with one
warning: the codes are then built as before.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from functools import lru_cache
from importlib.metadata import version
from logging import WARNING
from pathlib import Path
from typing import Any

import numpy as np
from flwr.common.logger import log

from core.cache_dir import cache_root

FORMAT = 1
REPO = Path(__file__).resolve().parent.parent
BUILDERS = ("clients/data.py", "clients/sources.py", "clients/synthetic.py", "clients/synthetic_params.json",
            "core/tasks.py", "core/states.py")
_WARNED: set[Path] = set()


@lru_cache(maxsize=1)
def builders_digest() -> str:
    digest = hashlib.sha256()
    for name in BUILDERS:
        digest.update(name.encode() + b"\0" + (REPO / name).read_bytes())
    for package in ("numpy", "pandas"):
        digest.update(f"{package}=={version(package)}".encode())
    return digest.hexdigest()


def lookup(identity: dict[str, Any], data_file: Path | None) -> dict[str, np.ndarray] | None:
    """The stored arrays of these codes, or None when there are none (or they cannot be read)."""
    key = entry_key(identity, data_file)
    if key is None:
        return None
    try:
        with np.load(codes_dir() / f"{key}.npz", allow_pickle=False) as entry:
            return {name: entry[name] for name in entry.files}
    except (OSError, ValueError):
        return None


def store(identity: dict[str, Any], data_file: Path | None, arrays: dict[str, np.ndarray]) -> None:
    """Write the entry atomically; a directory that cannot be written is warned about once and skipped."""
    key, directory = entry_key(identity, data_file), codes_dir()
    if key is None:
        return
    temporary = None
    try:
        directory.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=directory, suffix=".tmp")
        with os.fdopen(handle, "wb") as out:
            np.savez(out, **arrays)
        os.replace(temporary, directory / f"{key}.npz")
    except OSError as error:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
        if directory not in _WARNED:
            _WARNED.add(directory)
            log(WARNING, "the data cache %s cannot be written (%s); each process encodes its data itself",
                directory, error)


def entry_key(identity: dict[str, Any], data_file: Path | None) -> str | None:
    """The entry's name; None when the data file is not there (folktables before its download)."""
    stamp = None
    if data_file is not None:
        try:
            info = data_file.stat()
        except OSError:
            return None
        stamp = [str(data_file.resolve()), info.st_size, info.st_mtime_ns]
    text = json.dumps({"format": FORMAT, "builders": builders_digest(), "file": stamp, **identity}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def codes_dir() -> Path:
    """`codes/` in the user's cache, read at each call so FAIRFL_CACHE_DIR set later still counts."""
    return cache_root() / "codes"
