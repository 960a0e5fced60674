"""Sub-state clients: with `clients-per-state` C > 1 each state's data is split into C shards.

The data has no PUMA column, so shards are random: each split (train, test, val) of a state
is permuted from (seed, state, split) and shard j takes every C-th record of that order. The
state's partition is made first and never depends on C, and the shards of a split are
disjoint, cover it, and differ in size by at most one record.

A client is (state, shard); partition-id p is state p // C, shard p % C. Its label in every
results file is the state code when C = 1 and `XX-j` (e.g. `CA-3`, j from 0) when C > 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from core.states import fips

SPLIT_TAGS = {"train": 0, "test": 1, "val": 2}  # separate shard orders per split


@dataclass(frozen=True)
class ClientId:
    """One client: its state, its shard and the number of shards per state."""

    state: str
    shard: int = 0
    shards: int = 1

    @property
    def label(self) -> str:
        return self.state if self.shards == 1 else f"{self.state}-{self.shard}"

    @property
    def entropy(self) -> tuple[int, ...]:
        """Seed words naming this client; a whole-state client's are those used before shards existed."""
        return (fips(self.state),) if self.shards == 1 else (fips(self.state), self.shards, self.shard)


@cache
def client_ids(states: tuple[str, ...], shards: int) -> tuple[ClientId, ...]:
    """Every client of a run, in partition-id order (a state's shards are adjacent); cached, as a
    client looks its own up for every replicate's part of every message."""
    return tuple(ClientId(state, j, shards) for state in states for j in range(shards))


def client_labels(states: tuple[str, ...], shards: int) -> tuple[str, ...]:
    return tuple(c.label for c in client_ids(states, shards))


def shard_positions(n: int, seed: int, state: str, split: str, shard: int, shards: int) -> np.ndarray:
    """Sorted positions, within a split of n records, of the records in `shard`."""
    order = np.random.default_rng([seed, fips(state), 81, SPLIT_TAGS[split]]).permutation(n)
    return np.sort(order[shard::shards])
