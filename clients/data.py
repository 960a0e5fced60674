"""A state's train/test data: kept compact once per worker process, encoded per message.

Under `flwr run` every Ray actor ends up serving every state, so caching the encoded float32
matrices cost each actor all of them (430 MB on the 46-state table; the run's peak went from
2.6 to 1.9 GB without them). The cache therefore holds each feature as an index into the few
distinct encodings of its values (10 bytes per record instead of 404), and a split is
expanded back to exactly `encode`'s output when a message first uses it: 0.28 s of CPU per
pass over all 46 states, about 3% of a round's client work (benchmarks/RESULTS.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np
import pandas as pd

from clients.shards import ClientId, shard_positions
from clients.sources import Source, state_records
from core.states import fips
from core.tasks import TASKS, Task, encode, protected_groups

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
class CompactSplit:
    """A split as stored in the cache: per feature, each record's row in that feature's table."""

    rows: tuple[np.ndarray, ...]
    y: np.ndarray
    groups: dict[str, np.ndarray]

    def take(self, positions: np.ndarray) -> CompactSplit:
        """The records at `positions` (a shard's), still compact."""
        return CompactSplit(
            tuple(r[positions] for r in self.rows), self.y[positions], {a: g[positions] for a, g in self.groups.items()}
        )


@dataclass(frozen=True)
class StateCodes:
    """One state's data in compact form: per feature, its distinct encoded rows (`tables`).

    `seed` is the one its split was drawn with; shards are drawn from it too."""

    state: str
    seed: int
    tables: tuple[np.ndarray, ...]
    train: CompactSplit
    test: CompactSplit

    def expand(self, part: CompactSplit) -> Split:
        """The split's float32 input matrix, equal to `encode` of its records."""
        x = np.empty((len(part.y), sum(t.shape[1] for t in self.tables)), np.float32)
        start = 0
        for table, rows in zip(self.tables, part.rows):
            x[:, start : start + table.shape[1]] = table[rows]
            start += table.shape[1]
        return Split(x, part.y, part.groups)


class StateData:
    """One client's data: its state's splits, or its shard of each, encoded on first use.

    Only the client's own records are expanded; the state's compact codes stay shared."""

    def __init__(self, codes: StateCodes, client: ClientId | None = None) -> None:
        self.codes = codes
        self.client = client or ClientId(codes.state)

    @property
    def state(self) -> str:
        return self.codes.state

    @cached_property
    def train(self) -> Split:
        return self.codes.expand(self._part("train"))

    @cached_property
    def test(self) -> Split:
        return self.codes.expand(self._part("test"))

    def _part(self, split: str) -> CompactSplit:
        whole = getattr(self.codes, split)
        c = self.client
        if c.shards == 1:
            return whole
        positions = shard_positions(len(whole.y), self.codes.seed, c.state, split, c.shard, c.shards)
        if not len(positions):
            raise ValueError(
                f"client {c.label} has no {split} records: state {c.state}'s {split} split has only "
                f"{len(whole.y)}, fewer than clients-per-state {c.shards}"
            )
        return whole.take(positions)


def split_indices(n: int, seed: int, state: str) -> tuple[np.ndarray, np.ndarray]:
    """Seeded 80/20 split of a state's rows; depends only on (seed, state, n)."""
    order = np.random.default_rng([seed, fips(state), 80]).permutation(n)
    n_test = int(round(n * TEST_FRACTION))
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def _compact(task: Task, frame: pd.DataFrame) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
    """Per feature: the distinct encoded rows, and each record's row among them.

    `encode` itself encodes a frame of each column's distinct values (padded to one length),
    so the expansion reproduces it exactly whatever the feature types do."""
    distinct, inverse = {}, {}
    for column in task.columns:
        inverse[column], uniques = pd.factorize(frame[column], use_na_sentinel=False)
        distinct[column] = np.asarray(uniques)
    longest = max(len(values) for values in distinct.values())
    encoded = encode(task, pd.DataFrame({c: np.resize(v, longest) for c, v in distinct.items()}))
    tables, rows, start = [], [], 0
    for feature in task.features:
        block = encoded[: len(distinct[feature.column]), start : start + feature.width]
        table, row = np.unique(block, axis=0, return_inverse=True)
        tables.append(np.ascontiguousarray(table, dtype=np.float32))
        rows.append(row.reshape(-1)[inverse[feature.column]].astype(np.min_scalar_type(len(table) - 1)))
        start += feature.width
    return tuple(tables), tuple(rows)


def _compact_split(frame: pd.DataFrame, rows: tuple[np.ndarray, ...], select: np.ndarray) -> CompactSplit:
    part = frame.iloc[select]
    return CompactSplit(
        rows=tuple(r[select] for r in rows),
        y=part["label"].to_numpy(dtype=np.float32),
        groups=protected_groups(part),
    )


def build_state_codes(task: Task, frame: pd.DataFrame, seed: int) -> StateCodes:
    """Split one state's records and keep them compact (pure: the cache below only wraps it)."""
    state = str(frame["STATE"].iloc[0])
    train_rows, test_rows = split_indices(len(frame), seed, state)
    tables, rows = _compact(task, frame)
    return StateCodes(state, seed, tables, _compact_split(frame, rows, train_rows), _compact_split(frame, rows, test_rows))


def build_state_data(task: Task, frame: pd.DataFrame, seed: int) -> StateData:
    """Split and encode one state's records."""
    return StateData(build_state_codes(task, frame, seed))


@lru_cache(maxsize=None)
def state_codes(
    source: Source, task_name: str, state: str, seed: int, synthetic_rows: int, reversed_states: tuple[str, ...] = ()
) -> StateCodes:
    """A state's compact data, read and built once per process."""
    task = TASKS[task_name]
    frame = state_records(source, task, state, seed, synthetic_rows, reversed_states)
    if frame.empty:
        raise ValueError(f"state {state} has no records in source {source.kind} {source.path}")
    return build_state_codes(task, frame, seed)


def state_data(
    source: Source, task_name: str, client: ClientId, seed: int, synthetic_rows: int,
    reversed_states: tuple[str, ...] = (),
) -> StateData:
    """The ClientApp's entry point: a fresh view on the cached codes of the client's state,
    so what a message encodes is freed when the message is done."""
    return StateData(state_codes(source, task_name, client.state, seed, synthetic_rows, reversed_states), client)
