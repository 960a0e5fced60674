"""A state's train/test/validation data: kept compact once per worker process, encoded per message.

Under `flwr run` every Ray actor ends up serving every state, so caching the encoded float32
matrices cost each actor all of them (430 MB on the 46-state table; the run's peak went from
2.6 to 1.9 GB without them). The cache therefore holds each feature as an index into the few
distinct encodings of its values (10 bytes per record instead of 404), and a split is
expanded back to exactly `encode`'s output when a message first uses it: 0.28 s of CPU per
pass over all 46 states, about 3% of a round's client work (benchmarks/RESULTS.md).

Each feature's table row has at most one nonzero (a one-hot row or one number), which sparse
kernels rely on, so standardization never enters the tables: a task that standardizes gives
each client a `Standardizer` fitted on that client's own training split, and its `Split.x`
matrices are `(x - shift) / scale`.

The partition is today's seeded 80/20 train/test split, or (train-rows, test-rows, val-rows)
records sampled per state, the predecessor's "1000_2000_2000" (`partition_indices`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache, cached_property
from typing import TYPE_CHECKING

import numpy as np

from clients import code_cache
from clients.kernels import SparseSplit, sparse_from_tables
from clients.shards import ClientId, shard_positions
from clients.sources import Source, records_file, state_records
from core.states import fips
from core.tasks import Task, encode, protected_groups, task_for

if TYPE_CHECKING:  # pandas is loaded only where codes are built, never when they come from the cache
    import pandas as pd

TEST_FRACTION = 0.2
SPLITS = ("train", "test", "val")


@dataclass(frozen=True)
class Split:
    """Encoded inputs, 0/1 labels and protected-group indices of one split."""

    x: np.ndarray
    y: np.ndarray
    groups: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.y)


class ClientSplit:
    """One client's split as the compiled kernels read it: sparse codes (never densified on the
    hot path), labels and protected groups; the dense matrix only on demand, for references."""

    def __init__(self, sparse: SparseSplit, groups: dict[str, np.ndarray]) -> None:
        self.sparse = sparse
        self.groups = groups

    @property
    def y(self) -> np.ndarray:
        return self.sparse.y

    @cached_property
    def x(self) -> np.ndarray:
        """The float32 input matrix the model sees (standardized when the task standardizes)."""
        return self.sparse.dense()

    def __len__(self) -> int:
        return len(self.sparse)


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
class Standardizer:
    """The per-column shift and scale a client's model inputs get: `(x - shift) / scale`, float32."""

    shift: np.ndarray
    scale: np.ndarray

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Standardize `x` in place (a freshly expanded matrix: no second copy) and return it."""
        x -= self.shift
        x /= self.scale
        return x


def _weighted_row_sum(weights: np.ndarray, values: np.ndarray) -> np.ndarray:
    """sum_i weights[i] * values[i], row after row: a fixed order on every CPU, where the BLAS
    matrix-vector product it replaces sums in the order of the host's kernel."""
    total = np.zeros(values.shape[1])
    for weight, row in zip(weights, values):
        total += weight * row
    return total


def fit_standardizer(tables: tuple[np.ndarray, ...], rows: tuple[np.ndarray, ...]) -> Standardizer:
    """Mean and std (ddof 0) of each column of the matrix `rows` expand to, from each table
    weighted by how many records use each of its rows, so nothing is expanded. A column constant
    over the records (std 0) gets scale 1, so it standardizes to 0. Needs at least one record."""
    means, stds = [], []
    for table, index in zip(tables, rows):
        counts = np.bincount(index, minlength=len(table)).astype(np.float64)
        values = table.astype(np.float64)
        mean = _weighted_row_sum(counts, values) / counts.sum()
        std = np.sqrt(_weighted_row_sum(counts, (values - mean) ** 2) / counts.sum())
        used = values[counts > 0]
        std[used.min(axis=0) == used.max(axis=0)] = 0.0  # exactly, whatever the rounding left
        means.append(mean)
        stds.append(std)
    scale = np.concatenate(stds).astype(np.float32)
    scale[scale == 0] = 1.0
    return Standardizer(np.concatenate(means).astype(np.float32), scale)


@dataclass(frozen=True)
class StateCodes:
    """One state's data in compact form: per feature, its distinct encoded rows (`tables`).

    `seed` is the one its split was drawn with; shards are drawn from it too. `val` is empty
    unless a validation size was asked for; `standardize` is the task's."""

    state: str
    seed: int
    tables: tuple[np.ndarray, ...]
    train: CompactSplit
    test: CompactSplit
    val: CompactSplit
    standardize: bool = False
    # Each shard's fitted standardizer: a message makes a fresh StateData, and fitting took 5-6 ms
    # per message and replicate, more than a round's training at the paper preset.
    fitted: dict[tuple[int, int], Standardizer] = field(default_factory=dict, compare=False, repr=False)
    # Each shard's splits in the kernels' form, (sparse, groups) by (split, shard, shards): building
    # one took 0.36 ms, three per replicate and message (train, test, val), more than an
    # evaluation's compiled work. About 50 bytes a record (10 int32 codes, label, groups): the 46
    # states of one seed under the paper preset hold 12 MB; the dense matrices stay per message.
    sparse: dict[tuple[str, int, int], tuple[SparseSplit, dict[str, np.ndarray]]] = field(
        default_factory=dict, compare=False, repr=False)

    @property
    def width(self) -> int:
        return sum(t.shape[1] for t in self.tables)

    def expand(self, part: CompactSplit) -> Split:
        """The split's float32 input matrix, equal to `encode` of its records."""
        x = np.empty((len(part.y), self.width), np.float32)
        start = 0
        for table, rows in zip(self.tables, part.rows):
            x[:, start : start + table.shape[1]] = table[rows]
            start += table.shape[1]
        return Split(x, part.y, part.groups)


class StateData:
    """One client's data: its state's splits, or its shard of each, encoded on first use.

    Only the client's own records are expanded; the state's compact codes stay shared. Every
    split is standardized with `standardizer`, fitted on this client's training records only."""

    def __init__(self, codes: StateCodes, client: ClientId | None = None) -> None:
        self.codes = codes
        self.client = client or ClientId(codes.state)

    @property
    def state(self) -> str:
        return self.codes.state

    @cached_property
    def standardizer(self) -> Standardizer:
        """Shift and scale from this client's own training split (its shard's when a state has
        several clients); shift 0, scale 1 when the task does not standardize."""
        if not self.codes.standardize:
            return Standardizer(np.zeros(self.codes.width, np.float32), np.ones(self.codes.width, np.float32))
        shard = (self.client.shard, self.client.shards)
        if shard not in self.codes.fitted:
            part = self._part("train")
            if not len(part.y):
                raise ValueError(f"client {self.client.label} has no training records to standardize its inputs with")
            self.codes.fitted[shard] = fit_standardizer(self.codes.tables, part.rows)
        return self.codes.fitted[shard]

    @cached_property
    def train(self) -> ClientSplit:
        return self._split("train")

    @cached_property
    def test(self) -> ClientSplit:
        return self._split("test")

    @cached_property
    def val(self) -> ClientSplit:
        return self._split("val")

    def sizes(self) -> dict[str, int]:
        """Records in each of this client's splits, without encoding any."""
        sizes = {}
        for split in SPLITS:
            positions = self._positions(split)
            sizes[split] = len(getattr(self.codes, split).y) if positions is None else len(positions)
        return sizes

    def _split(self, split: str) -> ClientSplit:
        key = (split, self.client.shard, self.client.shards)
        if key not in self.codes.sparse:
            part = self._part(split)
            standard = self.standardizer
            self.codes.sparse[key] = (
                sparse_from_tables(self.codes.tables, part.rows, part.y, standard.shift, standard.scale), part.groups)
        return ClientSplit(*self.codes.sparse[key])

    def _positions(self, split: str) -> np.ndarray | None:
        """The client's positions in the state's split; None when it has the whole split."""
        whole, c = getattr(self.codes, split), self.client
        if c.shards == 1 or (split == "val" and not len(whole.y)):
            return None
        return shard_positions(len(whole.y), self.codes.seed, c.state, split, c.shard, c.shards)

    def _part(self, split: str) -> CompactSplit:
        whole, c = getattr(self.codes, split), self.client
        positions = self._positions(split)
        if positions is None:
            return whole
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


def partition_sizes(n: int, train_rows: int, test_rows: int, val_rows: int) -> tuple[int, int, int]:
    """Train, test and validation sizes sampled from a state of n records.

    The requested sizes when the state has enough records; otherwise the same proportions,
    each floor(n * rows / total) as the predecessor computes them (so at most two records stay
    unused), with train raised to 1 when it rounds to 0 but was asked for."""
    requested = (train_rows, test_rows, val_rows)
    if min(requested) < 0:
        raise ValueError(f"train-rows, test-rows and val-rows must be >= 0; got {requested}")
    total = sum(requested)
    if n >= total:
        return requested
    train, test, val = (n * rows // total for rows in requested)
    return max(train, 1 if train_rows else 0), test, val


def partition_indices(
    n: int, seed: int, state: str, train_rows: int = 0, test_rows: int = 0, val_rows: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A state's sorted train, test and validation rows; depends only on (seed, state, n, sizes).

    0/0/0 is `split_indices`' 80/20 split with no validation rows; otherwise disjoint samples of
    `partition_sizes` records, consecutive runs of one seeded permutation of the state's rows."""
    if not (train_rows or test_rows or val_rows):
        train, test = split_indices(n, seed, state)
        return train, test, np.empty(0, dtype=train.dtype)
    sizes = partition_sizes(n, train_rows, test_rows, val_rows)
    order = np.random.default_rng([seed, fips(state), 82]).permutation(n)
    ends = np.cumsum(sizes)
    return tuple(np.sort(order[end - size : end]) for size, end in zip(sizes, ends))


def _compact(task: Task, frame: pd.DataFrame) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
    """Per feature: the distinct encoded rows, and each record's row among them.

    `encode` itself encodes a frame of each column's distinct values (padded to one length),
    so the expansion reproduces it exactly whatever the feature types do."""
    import pandas as pd

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


def build_state_codes(
    task: Task, frame: pd.DataFrame, seed: int, train_rows: int = 0, test_rows: int = 0, val_rows: int = 0
) -> StateCodes:
    """Split one state's records and keep them compact (pure: the cache below only wraps it)."""
    state = str(frame["STATE"].iloc[0])
    splits = partition_indices(len(frame), seed, state, train_rows, test_rows, val_rows)
    tables, rows = _compact(task, frame)
    train, test, val = (_compact_split(frame, rows, select) for select in splits)
    return StateCodes(state, seed, tables, train, test, val, task.standardize)


def build_state_data(
    task: Task, frame: pd.DataFrame, seed: int, train_rows: int = 0, test_rows: int = 0, val_rows: int = 0
) -> StateData:
    """Split and encode one state's records."""
    return StateData(build_state_codes(task, frame, seed, train_rows, test_rows, val_rows))


@cache
def state_codes(
    source: Source, task_name: str, state: str, seed: int, synthetic_rows: int, reversed_states: tuple[str, ...] = (),
    encoding: str = "grouped", train_rows: int = 0, test_rows: int = 0, val_rows: int = 0,
) -> StateCodes:
    """A state's compact data, read and built once per process, and once per machine through the
    on-disk cache (clients/code_cache.py) while its source file and the builders are unchanged."""
    identity = {"source": [source.kind, source.path], "task": task_name, "encoding": encoding, "state": state,
                "seed": seed, "synthetic-rows": synthetic_rows, "reversed": list(reversed_states),
                "partition": [train_rows, test_rows, val_rows]}
    data_file = records_file(source, state)
    stored = code_cache.lookup(identity, data_file)
    if stored is not None:
        return codes_from_arrays(stored)
    task = task_for(task_name, encoding)
    frame = state_records(source, task, state, seed, synthetic_rows, reversed_states)
    if frame.empty:
        raise ValueError(f"state {state} has no records in source {source.kind} {source.path}")
    codes = build_state_codes(task, frame, seed, train_rows, test_rows, val_rows)
    code_cache.store(identity, data_file, codes_to_arrays(codes))
    return codes


def codes_to_arrays(codes: StateCodes) -> dict[str, np.ndarray]:
    """`codes` as named arrays (the cache's file format; `codes_from_arrays` inverts it exactly)."""
    meta = {"state": codes.state, "seed": codes.seed, "standardize": codes.standardize, "tables": len(codes.tables),
            "groups": list(codes.train.groups)}
    arrays = {"meta": np.frombuffer(json.dumps(meta).encode(), np.uint8)}
    arrays.update({f"table{i}": t for i, t in enumerate(codes.tables)})
    for split in SPLITS:
        part: CompactSplit = getattr(codes, split)
        arrays.update({f"{split}.rows{i}": r for i, r in enumerate(part.rows)})
        arrays[f"{split}.y"] = part.y
        arrays.update({f"{split}.group.{a}": g for a, g in part.groups.items()})
    return arrays


def codes_from_arrays(arrays: dict[str, np.ndarray]) -> StateCodes:
    meta = json.loads(arrays["meta"].tobytes())
    parts = {
        split: CompactSplit(tuple(arrays[f"{split}.rows{i}"] for i in range(meta["tables"])), arrays[f"{split}.y"],
                            {a: arrays[f"{split}.group.{a}"] for a in meta["groups"]})
        for split in SPLITS
    }
    tables = tuple(arrays[f"table{i}"] for i in range(meta["tables"]))
    return StateCodes(meta["state"], meta["seed"], tables, **parts, standardize=meta["standardize"])


def state_data(
    source: Source, task_name: str, client: ClientId, seed: int, synthetic_rows: int,
    reversed_states: tuple[str, ...] = (), encoding: str = "grouped",
    train_rows: int = 0, test_rows: int = 0, val_rows: int = 0,
) -> StateData:
    """The ClientApp's entry point: a fresh view on the cached codes of the client's state (which
    keep its splits' sparse form too), so what a message densifies is freed when it is done."""
    codes = state_codes(source, task_name, client.state, seed, synthetic_rows, reversed_states, encoding,
                        train_rows, test_rows, val_rows)
    return StateData(codes, client)
