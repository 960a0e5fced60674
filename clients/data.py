"""A state's encoded train/test data, built once per worker process and reused by every message."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd

from clients.sources import Source, fips, state_records
from clients.tasks import TASKS, Task, encode, protected_groups

TEST_FRACTION = 0.2


@dataclass(frozen=True)
class Split:
    """Encoded inputs, 0/1 labels and protected-group indices of one split."""

    x: np.ndarray
    y: np.ndarray
    groups: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class StateData:
    """One client's data: its state code and its train and test splits."""

    state: str
    train: Split
    test: Split


def split_indices(n: int, seed: int, state: str) -> tuple[np.ndarray, np.ndarray]:
    """Seeded 80/20 split of a state's rows; depends only on (seed, state, n)."""
    order = np.random.default_rng([seed, fips(state), 80]).permutation(n)
    n_test = int(round(n * TEST_FRACTION))
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def _split(task: Task, frame: pd.DataFrame, rows: np.ndarray) -> Split:
    part = frame.iloc[rows]
    return Split(
        x=encode(task, part),
        y=part["label"].to_numpy(dtype=np.float32),
        groups=protected_groups(part),
    )


def build_state_data(task: Task, frame: pd.DataFrame, seed: int) -> StateData:
    """Split and encode one state's records (pure: the cache below only wraps it)."""
    state = str(frame["STATE"].iloc[0])
    train_rows, test_rows = split_indices(len(frame), seed, state)
    return StateData(state, _split(task, frame, train_rows), _split(task, frame, test_rows))


@lru_cache(maxsize=None)
def state_data(
    source: Source, task_name: str, state: str, seed: int, synthetic_rows: int, reversed_states: tuple[str, ...] = ()
) -> StateData:
    """The cached per-process entry point used by the ClientApp."""
    task = TASKS[task_name]
    frame = state_records(source, task, state, seed, synthetic_rows, reversed_states)
    if frame.empty:
        raise ValueError(f"state {state} has no records in source {source.kind} {source.path}")
    return build_state_data(task, frame, seed)
