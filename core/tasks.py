"""The two prediction tasks as declarative data: raw PUMS columns, their encoding, the label.

Two encodings of the same raw columns (`task_for`):
- "grouped" (the default, `TASKS`): folktables' one-hot convention for categorical codes, with
  two groupings used across the fairness literature: OCCP by Census major occupation group and
  POBP by world region. Numeric columns get a fixed scale, so no statistics ever cross clients
  and every client encodes identically.
- "paper": the inputs of the paper's predecessor (Chang & Shokri, ICLR 2023), widths 54 and 109,
  with plain numbers standardized per client on its own training split (`Task.standardize`;
  the statistics are applied in clients/data.py, never inside an encoding).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # frames are only passed in: a ClientApp process reading cached codes never loads pandas
    import pandas as pd


@dataclass(frozen=True)
class Numeric:
    """A numeric column divided by a fixed scale."""

    column: str
    scale: float

    @property
    def width(self) -> int:
        return 1

    def encode(self, values: np.ndarray) -> np.ndarray:
        return (values.astype(np.float32) / np.float32(self.scale))[:, None]


@dataclass(frozen=True)
class OneHot:
    """One indicator per listed code; a code outside the list encodes as all zeros."""

    column: str
    codes: tuple[int, ...]

    @property
    def width(self) -> int:
        return len(self.codes)

    def encode(self, values: np.ndarray) -> np.ndarray:
        return (values[:, None] == np.asarray(self.codes)[None, :]).astype(np.float32)


@dataclass(frozen=True)
class Binned:
    """One indicator per half-open code range [edges[i], edges[i+1]); outside is all zeros."""

    column: str
    edges: tuple[int, ...]

    @property
    def width(self) -> int:
        return len(self.edges) - 1

    def encode(self, values: np.ndarray) -> np.ndarray:
        index = np.searchsorted(np.asarray(self.edges), values, side="right") - 1
        out = np.zeros((len(values), self.width), dtype=np.float32)
        inside = (index >= 0) & (index < self.width)
        out[np.flatnonzero(inside), index[inside]] = 1.0
        return out


Feature = Numeric | OneHot | Binned

# Census 2018 occupation codes by major SOC group (MGR, BUS, FIN, CMM, ENG, SCI, CMS, LGL,
# EDU, ENT, MED, HLS, PRT, EAT, CLN, PRS, SAL, OFF, FFF, CON, EXT, RPR, PRD, TRN, MIL,
# unemployed).
OCCP_GROUP_EDGES = (
    1, 500, 800, 1000, 1300, 1600, 2000, 2100, 2200, 2600, 3000, 3600, 3700, 4000,
    4200, 4300, 4700, 5000, 6000, 6200, 6800, 7000, 7700, 9000, 9800, 9900, 10000,
)
# Place of birth: US and territories, Europe, Asia, the Americas, Africa, Oceania.
POBP_REGION_EDGES = (0, 100, 200, 300, 400, 500, 600)

# folktables' code for a blank answer: its postprocess is `np.nan_to_num(x, -1)`, whose second
# argument is numpy's `copy`, so blanks become 0 (no listed code is 0 where blanks occur).
MISSING = 0
# A code no record carries. folktables' `generate_categories` gives every categorical feature an
# "N/A" category for blanks, also one whose dictionary entry lists no blank; such a column is
# always 0 (a separate code because RELP's 0 is "reference person", not a blank).
NO_BLANK = -1


def _codes(first: int, last: int) -> tuple[int, ...]:
    return tuple(range(first, last + 1))


@dataclass(frozen=True)
class Task:
    """A folktables problem: its raw feature columns, their encoding and the model size."""

    name: str
    folktables_problem: str
    label_column: str
    features: tuple[Feature, ...]
    hidden: int
    standardize: bool = False  # model inputs standardized per client, on its training split only

    @property
    def columns(self) -> list[str]:
        return [f.column for f in self.features]

    @property
    def width(self) -> int:
        return sum(f.width for f in self.features)


INCOME = Task(
    name="income",
    folktables_problem="ACSIncome",
    label_column="PINCP",
    features=(
        Numeric("AGEP", 100.0),
        OneHot("COW", _codes(1, 9)),
        OneHot("SCHL", _codes(1, 24)),
        OneHot("MAR", _codes(1, 5)),
        Binned("OCCP", OCCP_GROUP_EDGES),
        Binned("POBP", POBP_REGION_EDGES),
        OneHot("RELP", _codes(0, 17)),
        Numeric("WKHP", 100.0),
        OneHot("SEX", (1, 2)),
        OneHot("RAC1P", _codes(1, 9)),
    ),
    hidden=32,
)

EMPLOYMENT = Task(
    name="employment",
    folktables_problem="ACSEmployment",
    label_column="ESR",
    features=(
        Numeric("AGEP", 100.0),
        OneHot("SCHL", (MISSING, *_codes(1, 24))),
        OneHot("MAR", _codes(1, 5)),
        OneHot("RELP", _codes(0, 17)),
        OneHot("DIS", (1, 2)),
        OneHot("ESP", (MISSING, *_codes(1, 8))),
        OneHot("CIT", _codes(1, 5)),
        OneHot("MIG", (MISSING, 1, 2, 3)),
        OneHot("MIL", (MISSING, *_codes(1, 4))),
        OneHot("ANC", (1, 2, 3, 4, 8)),
        OneHot("NATIVITY", (1, 2)),
        OneHot("DEAR", (1, 2)),
        OneHot("DEYE", (1, 2)),
        OneHot("DREM", (MISSING, 1, 2)),
        OneHot("SEX", (1, 2)),
        OneHot("RAC1P", _codes(1, 9)),
    ),
    hidden=64,
)

TASKS: dict[str, Task] = {t.name: t for t in (INCOME, EMPLOYMENT)}

# Income, width 54: the five numbers as they are, then one-hot COW, SCHL, MAR, SEX, RAC1P
# (9 + 24 + 5 + 2 + 9 = 49), the order of the predecessor's columns (numbers in folktables'
# feature order, then the one-hot blocks); within a block codes ascend (theirs sort by label text,
# a permutation of columns). COW's blank cannot pass ACSIncome's filter (WKHP > 0).
PAPER_INCOME = Task(
    name="income",
    folktables_problem="ACSIncome",
    label_column="PINCP",
    features=(
        Numeric("AGEP", 1.0),
        Numeric("OCCP", 1.0),
        Numeric("POBP", 1.0),
        Numeric("RELP", 1.0),
        Numeric("WKHP", 1.0),
        OneHot("COW", _codes(1, 9)),
        OneHot("SCHL", _codes(1, 24)),
        OneHot("MAR", _codes(1, 5)),
        OneHot("SEX", (1, 2)),
        OneHot("RAC1P", _codes(1, 9)),
    ),
    hidden=32,
    standardize=True,
)

# Employment, width 109 = AGEP + 15 categorical features x (their 2018 PUMS dictionary codes + one
# "N/A" column). The predecessor one-hot encodes every category `generate_categories` lists, seen
# or not, and that list holds one N/A per feature: the dictionary's blank code where it has one
# (SCHL bb, ESP/MIG/MIL/DREM b), otherwise the default N/A (NO_BLANK, always 0). Dictionary codes:
# SCHL 01-24 grade/degree; MAR 1-5; RELP 00-17; DIS, DEAR, DEYE, DREM 1 yes / 2 no; ESP 1-8 parents'
# labor force; CIT 1-5; MIG 1 same house, 2 abroad, 3 moved in US; MIL 1-4; ANC 1 single,
# 2 multiple, 3 unclassified, 4 not reported, 8 suppressed; NATIVITY 1 native / 2 foreign born;
# SEX 1-2; RAC1P 1-9.
PAPER_EMPLOYMENT = Task(
    name="employment",
    folktables_problem="ACSEmployment",
    label_column="ESR",
    features=(
        Numeric("AGEP", 1.0),
        OneHot("SCHL", (MISSING, *_codes(1, 24))),
        OneHot("MAR", (NO_BLANK, *_codes(1, 5))),
        OneHot("RELP", (NO_BLANK, *_codes(0, 17))),
        OneHot("DIS", (NO_BLANK, 1, 2)),
        OneHot("ESP", (MISSING, *_codes(1, 8))),
        OneHot("CIT", (NO_BLANK, *_codes(1, 5))),
        OneHot("MIG", (MISSING, 1, 2, 3)),
        OneHot("MIL", (MISSING, *_codes(1, 4))),
        OneHot("ANC", (NO_BLANK, 1, 2, 3, 4, 8)),
        OneHot("NATIVITY", (NO_BLANK, 1, 2)),
        OneHot("DEAR", (NO_BLANK, 1, 2)),
        OneHot("DEYE", (NO_BLANK, 1, 2)),
        OneHot("DREM", (MISSING, 1, 2)),
        OneHot("SEX", (NO_BLANK, 1, 2)),
        OneHot("RAC1P", (NO_BLANK, *_codes(1, 9))),
    ),
    hidden=64,
    standardize=True,
)

ENCODINGS: dict[str, dict[str, Task]] = {
    "grouped": TASKS,
    "paper": {t.name: t for t in (PAPER_INCOME, PAPER_EMPLOYMENT)},
}


def task_for(name: str, encoding: str = "grouped") -> Task:
    """The task `name` under `encoding`; "grouped" gives `TASKS[name]` itself."""
    if encoding not in ENCODINGS:
        raise ValueError(f"unknown encoding '{encoding}'; valid choices: {', '.join(ENCODINGS)}")
    if name not in ENCODINGS[encoding]:
        raise ValueError(f"unknown task '{name}'; valid choices: {', '.join(ENCODINGS[encoding])}")
    return ENCODINGS[encoding][name]

# Protected attributes, both binary: group 0 is the first name, group 1 the second.
ATTRIBUTES: dict[str, tuple[str, str]] = {
    "sex": ("male", "female"),
    "race": ("white", "non-white"),
}


def encode(task: Task, frame: pd.DataFrame) -> np.ndarray:
    """Encode raw PUMS codes into the model's float32 input matrix (rows x task.width)."""
    blocks = [
        f.encode(frame[f.column].fillna(MISSING).to_numpy(dtype=np.int64)) for f in task.features
    ]
    return np.ascontiguousarray(np.concatenate(blocks, axis=1), dtype=np.float32)


def protected_groups(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Group index per row for each protected attribute: sex (0 male, 1 female), race (0 White)."""
    return {
        "sex": (frame["SEX"].to_numpy() == 2).astype(np.int8),
        "race": (frame["RAC1P"].to_numpy() != 1).astype(np.int8),
    }
