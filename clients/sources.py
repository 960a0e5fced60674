"""Where a state's raw records come from: a prepared table, folktables' ACS files, or synthetic.

The server resolves the source once (`resolve_source`) and sends the result to every client,
so all clients read the same thing and every output can record what actually ran.
"""

from __future__ import annotations

import sys
import urllib.request
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from folktables import ACSDataSource, acs

from clients.synthetic import synthetic_pums
from core.states import FOLKTABLES_STATES, STATE_FIPS
from core.tasks import Task

ACS_YEAR = "2018"
ACS_HORIZON = "1-Year"
CENSUS_PUMS_URL = f"https://www2.census.gov/programs-surveys/acs/data/pums/{ACS_YEAR}/{ACS_HORIZON}/"
REACH_TIMEOUT_S = 3.0
TABLE_SUFFIXES = (".parquet", ".csv")


class DataError(ValueError):
    """Data that cannot be used; the message names the file, column or state at fault."""


@dataclass(frozen=True)
class Source:
    """A resolved data source: its kind, its location and the sorted states it serves."""

    kind: str
    path: str
    states: tuple[str, ...]
    note: str = ""


def default_data_dir() -> Path:
    return Path.home() / ".cache" / "fairfl" / "folktables"


def folktables_file(data_dir: Path, state: str) -> Path:
    return data_dir / ACS_YEAR / ACS_HORIZON / f"psam_p{STATE_FIPS[state]:02d}.csv"


def _select_states(available: tuple[str, ...], wanted: tuple[str, ...], where: str) -> tuple[str, ...]:
    unknown = [s for s in wanted if s not in available]
    if unknown:
        raise DataError(
            f"unknown state(s) {', '.join(unknown)} for {where}; valid choices: {', '.join(available)}"
        )
    return tuple(sorted(wanted)) if wanted else available


def _read_table(path: Path, columns: list[str]) -> pd.DataFrame:
    if path.suffix == ".parquet":
        return pq.read_table(path, columns=columns).to_pandas()
    return pd.read_csv(path, usecols=columns)


def _table_columns(path: Path) -> list[str]:
    if path.suffix == ".parquet":
        return list(pq.read_schema(path).names)
    return list(pd.read_csv(path, nrows=0).columns)


def check_table(path: Path, task: Task) -> tuple[str, ...]:
    """Check a prepared table's shape and values; return the sorted states it holds.

    Checked once, before training, because a client that hits a bad value mid-run is only
    counted as failed and the run would go on without it.
    """
    if not path.is_file():
        raise DataError(f"data-path '{path}' does not exist or is not a file")
    if path.suffix not in TABLE_SUFFIXES:
        raise DataError(f"data-path '{path}' must end in one of {', '.join(TABLE_SUFFIXES)}")
    try:
        present = _table_columns(path)
        missing = [c for c in ("STATE", *task.columns, "label") if c not in present]
        if missing:
            raise DataError(
                f"data-path '{path}' lacks column(s) {', '.join(missing)} needed for task "
                f"'{task.name}'; it needs STATE, {', '.join(task.columns)}, label"
            )
        frame = _read_table(path, ["STATE", *task.columns, "label"])
    except DataError:
        raise
    except Exception as err:  # pyarrow and pandas raise many types for unreadable files
        raise DataError(f"data-path '{path}' cannot be read as {path.suffix[1:]}: {err}") from err
    _check_values(frame, path, task)
    states = frame["STATE"].astype(str).unique()
    foreign = sorted(set(states) - set(FOLKTABLES_STATES))
    if foreign:
        raise DataError(
            f"data-path '{path}' has unknown STATE value(s) {', '.join(map(str, foreign[:5]))}; "
            f"valid: 2-letter codes {', '.join(FOLKTABLES_STATES)}"
        )
    return tuple(sorted(states))


def _check_values(frame: pd.DataFrame, path: Path, task: Task) -> None:
    """Some rows, numeric feature codes, 0/1 labels."""
    if frame.empty:
        raise DataError(f"data-path '{path}' has no rows")
    for column in task.columns:
        values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        bad = np.flatnonzero(~np.isfinite(values))
        if len(bad):
            raise DataError(
                f"data-path '{path}' column {column} has a blank or non-numeric value "
                f"{_cell(frame[column], bad[0])}; task '{task.name}' needs numeric codes"
            )
    labels = frame["label"]
    bad = np.flatnonzero(~labels.isin([0, 1]).to_numpy())
    if len(bad):
        # a CSV column holding one stray word is read as text, so show a value that is not a bool word
        stray = [i for i in bad if str(labels.iloc[i]) not in ("True", "False")]
        raise DataError(
            f"data-path '{path}' column label must hold only 0/1 or False/True; "
            f"found {_cell(labels, (stray or bad)[0])}"
        )


def _cell(column: pd.Series, position: int) -> str:
    return f"'{column.iloc[position]}' (data row {position + 1})"


def _folktables_cached(data_dir: Path, states: tuple[str, ...]) -> bool:
    return all(folktables_file(data_dir, s).is_file() for s in states)


def _census_reachable() -> bool:
    try:
        urllib.request.urlopen(urllib.request.Request(CENSUS_PUMS_URL, method="HEAD"), timeout=REACH_TIMEOUT_S)
    except OSError:
        return False
    return True


def resolve_source(kind: str, data_path: str, data_dir: str, states: tuple[str, ...], task: Task) -> Source:
    """Decide which source runs (resolving `auto`) and which states it serves; fail clearly."""
    folk_dir = Path(data_dir) if data_dir else default_data_dir()
    if kind == "auto":
        if data_path and Path(data_path).exists():
            kind = "table"
        elif _folktables_cached(folk_dir, states or FOLKTABLES_STATES) or _census_reachable():
            kind = "folktables"
        else:
            kind = "synthetic"
            print(
                "\n" + "!" * 78 + "\n!! data-source 'auto': no data-path file and no folktables data "
                f"(cache {folk_dir} empty,\n!! census download unreachable): running on SYNTHETIC data.\n"
                + "!" * 78 + "\n",
                file=sys.stderr,
                flush=True,
            )
            note = "auto: no table file, folktables unreachable"
            return Source("synthetic", "", _select_states(FOLKTABLES_STATES, states, "synthetic data"), note)
    if kind == "table":
        path = Path(data_path).resolve()
        return Source("table", str(path), _select_states(check_table(path, task), states, f"'{path}'"))
    if kind == "folktables":
        return Source("folktables", str(folk_dir.resolve()), _select_states(FOLKTABLES_STATES, states, "folktables"))
    return Source("synthetic", "", _select_states(FOLKTABLES_STATES, states, "synthetic data"))


@lru_cache(maxsize=2)
def _table_frame(path: str, columns: tuple[str, ...]) -> pd.DataFrame:
    """The whole table's task columns, read once per worker process."""
    return _read_table(Path(path), list(columns))


def _folktables_problem(task: Task, raw: pd.DataFrame, state: str) -> pd.DataFrame:
    problem = getattr(acs, task.folktables_problem)
    features, label, _ = problem.df_to_pandas(raw)
    frame = features.astype(np.int64)
    frame["label"] = label.to_numpy().ravel().astype(bool)
    frame.insert(0, "STATE", state)
    return frame


def state_records(
    source: Source, task: Task, state: str, seed: int, synthetic_rows: int, reversed_states: tuple[str, ...] = ()
) -> pd.DataFrame:
    """One state's records: `STATE`, the task's raw feature codes and a boolean `label`."""
    if source.kind == "table":
        table = _table_frame(source.path, ("STATE", *task.columns, "label"))
        frame = table[table["STATE"] == state].reset_index(drop=True)
        frame["label"] = frame["label"].astype(bool)
        return frame
    if source.kind == "folktables":
        reader = ACSDataSource(survey_year=ACS_YEAR, horizon=ACS_HORIZON, survey="person", root_dir=source.path)
        return _folktables_problem(task, reader.get_data(states=[state], download=True), state)
    raw = synthetic_pums([state], seed=seed, rows_per_state=synthetic_rows or None, reversed_states=reversed_states)
    return _folktables_problem(task, raw, state)
