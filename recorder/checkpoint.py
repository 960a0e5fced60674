"""The server's state after a completed round, saved atomically so a killed run can continue.

One file, `checkpoint.npz` in the results directory, replaced whole after every round (not
fsynced: recorder/files.py says why and what that means):
the arrays the next round starts from (the global model, or the k cluster models under
their `c<j>.` prefixes) and a JSON record of the round, the strategy's own state (e.g.
cluster assignments, the last headline numbers) and the byte size of every CSV at that
round. No random generator state is needed: every draw is derived from (seed, state, round)
or (seed, cluster), so a resumed round draws exactly what the uninterrupted one would.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.params import Params
from recorder.files import ResultsError, write_atomic

CHECKPOINT_FILE = "checkpoint.npz"
FORMAT = 1
_META = "meta"
_ARRAY = "array:"


@dataclass(frozen=True)
class Checkpoint:
    """What a run needs to continue after `server_round`."""

    server_round: int
    arrays: Params
    strategy_state: dict[str, Any] = field(default_factory=dict)
    csv_sizes: dict[str, int] = field(default_factory=dict)


def save_checkpoint(directory: Path, checkpoint: Checkpoint) -> None:
    """Write the checkpoint file whole (see `write_atomic`)."""
    meta = {
        "format": FORMAT,
        "server_round": checkpoint.server_round,
        "strategy_state": checkpoint.strategy_state,
        "csv_sizes": checkpoint.csv_sizes,
    }
    buffer = io.BytesIO()
    np.savez(buffer, **{_META: np.array(json.dumps(meta))}, **{_ARRAY + k: v for k, v in checkpoint.arrays.items()})
    write_atomic(directory / CHECKPOINT_FILE, buffer.getvalue(), durable=False)


def load_checkpoint(directory: Path) -> Checkpoint | None:
    """The directory's checkpoint, None if it has none, or a ResultsError naming the file."""
    path = directory / CHECKPOINT_FILE
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            meta = json.loads(str(stored[_META]))
            arrays = {k[len(_ARRAY):]: stored[k] for k in stored.files if k.startswith(_ARRAY)}
        if meta.get("format") != FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, expected {FORMAT}")
        return Checkpoint(int(meta["server_round"]), arrays, meta["strategy_state"], meta["csv_sizes"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        raise ResultsError(f"checkpoint '{path}' cannot be read: {err}") from err


def remove_checkpoint(directory: Path) -> None:
    """A finished run needs no checkpoint (its summary.json is written first)."""
    (directory / CHECKPOINT_FILE).unlink(missing_ok=True)
