"""Where a state's raw records come from: a prepared table, the bundled sample of real records,
folktables' ACS files, or synthetic.

The server resolves the source once (`resolve_source`) and sends the result to every client,
so all clients read the same thing and every output can record what actually ran. Nothing is
downloaded by a run: folktables reads its root offline, and a missing Census file stops the run
before training, naming `python -m clients.download_acs`, the one command that downloads.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from clients.synthetic import synthetic_pums
from core.cache_dir import cache_root
from core.states import FOLKTABLES_STATES, STATE_FIPS
from core.tasks import MISSING, Task

# pandas, pyarrow and folktables are imported in the functions that read records: on the deployment
# engine every message is a fresh process, and one that finds its codes in the on-disk cache
# (clients/code_cache.py) reads no records, so it should not pay ~0.3 CPU s to import them.
if TYPE_CHECKING:
    import pandas as pd

ACS_YEAR = "2018"
ACS_HORIZON = "1-Year"
TABLE_SUFFIXES = (".parquet", ".csv")
# The bundled samples, by their absolute paths in this checkout: `flwr run` packages no parquet
# files, so the app's packaged copy lacks them and the pre-flight check pins the path.
DATA_DIR = Path(__file__).resolve().parent.parent / "data"
SAMPLE_PATH = DATA_DIR / "acs_income_2018_sample.parquet"
EMPLOYMENT_SAMPLE_PATH = DATA_DIR / "acs_employment_2018_sample.parquet"
SAMPLES = {"income": SAMPLE_PATH, "employment": EMPLOYMENT_SAMPLE_PATH}
REBUILD_SAMPLE = {
    "income": "`python -m clients.make_sample` (needs the shared 46-state table)",
    "employment": "`python -m clients.make_employment_sample` (needs the shared WY PUMS file and MA table)",
}
DOWNLOAD = "python -m clients.download_acs"
SOURCE_KINDS = ("auto", "table", "sample", "folktables", "synthetic")
PACKAGED_COPY = (
    "under a bare `flwr run`, whose packaged app copy carries no parquet files, give "
    "data-source 'sample' and data-path the sample's absolute path"
)


class DataError(ValueError):
    """Data that cannot be used; the message names the file, column or state at fault."""


@dataclass(frozen=True)
class Source:
    """A resolved data source: its kind, its location and the sorted states it serves."""

    kind: str
    path: str
    states: tuple[str, ...]
    note: str = ""

    @property
    def label(self) -> str:
        """Real or synthetic records, and how many states: what banners, config.json and reports show."""
        states = f"{len(self.states)} state" + ("" if len(self.states) == 1 else "s")
        return f"{'synthetic' if self.kind == 'synthetic' else 'real'}, {states}"


def default_data_dir() -> Path:
    return cache_root() / "folktables"


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
    import pandas as pd
    import pyarrow.parquet as pq

    if path.suffix == ".parquet":
        return pq.read_table(path, columns=columns).to_pandas()
    return pd.read_csv(path, usecols=columns)


def _table_columns(path: Path) -> list[str]:
    import pandas as pd
    import pyarrow.parquet as pq

    if path.suffix == ".parquet":
        return list(pq.read_schema(path).names)
    return list(pd.read_csv(path, nrows=0).columns)


def check_table(path: Path, task: Task, name: str = "data-path") -> tuple[str, ...]:
    """Check a prepared table's shape and values; return the sorted states it holds.

    Checked once, before training, because a client that hits a bad value mid-run is only
    counted as failed and the run would go on without it. `name` says what the file is in messages.
    """
    if not path.is_file():
        raise DataError(f"{name} '{path}' does not exist or is not a file")
    if path.suffix not in TABLE_SUFFIXES:
        raise DataError(f"{name} '{path}' must end in one of {', '.join(TABLE_SUFFIXES)}")
    try:
        present = _table_columns(path)
        missing = [c for c in ("STATE", *task.columns, "label") if c not in present]
        if missing:
            raise DataError(
                f"{name} '{path}' lacks column(s) {', '.join(missing)} needed for task "
                f"'{task.name}'; it needs STATE, {', '.join(task.columns)}, label"
            )
        frame = _read_table(path, ["STATE", *task.columns, "label"])
    except DataError:
        raise
    except Exception as err:  # pyarrow and pandas raise many types for unreadable files
        raise DataError(f"{name} '{path}' cannot be read as {path.suffix[1:]}: {err}") from err
    _check_values(frame, path, task, name)
    states = frame["STATE"].astype(str).unique()
    foreign = sorted(set(states) - set(FOLKTABLES_STATES))
    if foreign:
        raise DataError(
            f"{name} '{path}' has unknown STATE value(s) {', '.join(map(str, foreign[:5]))}; "
            f"valid: 2-letter codes {', '.join(FOLKTABLES_STATES)}"
        )
    return tuple(sorted(states))


def _check_values(frame: pd.DataFrame, path: Path, task: Task, name: str) -> None:
    """Some rows, numeric feature codes, 0/1 labels."""
    import pandas as pd

    if frame.empty:
        raise DataError(f"{name} '{path}' has no rows")
    for column in task.columns:
        values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        bad = np.flatnonzero(~np.isfinite(values))
        if len(bad):
            raise DataError(
                f"{name} '{path}' column {column} has a blank or non-numeric value "
                f"{_cell(frame[column], bad[0])}; task '{task.name}' needs numeric codes"
            )
    labels = frame["label"]
    bad = np.flatnonzero(~labels.isin([0, 1]).to_numpy())
    if len(bad):
        # a CSV column holding one stray word is read as text, so show a value that is not a bool word
        stray = [i for i in bad if str(labels.iloc[i]) not in ("True", "False")]
        raise DataError(
            f"{name} '{path}' column label must hold only 0/1 or False/True; "
            f"found {_cell(labels, (stray or bad)[0])}"
        )


def _cell(column: pd.Series, position: int) -> str:
    return f"'{column.iloc[position]}' (data row {position + 1})"


def _folktables_cached(data_dir: Path, states: tuple[str, ...]) -> bool:
    return all(folktables_file(data_dir, s).is_file() for s in states)


def check_folktables(data_dir: Path, states: tuple[str, ...]) -> None:
    """Every state's Census person file must already be in the folktables root: a run never
    downloads, and folktables would otherwise fail inside each client, mid-run. The message names
    the first missing file and downloads every missing state."""
    missing = [s for s in states if not folktables_file(data_dir, s).is_file()]
    if missing:
        more = f" (and the files of {len(missing) - 1} more state(s))" if len(missing) > 1 else ""
        others = ", ".join(k for k in SOURCE_KINDS if k not in ("auto", "folktables"))
        raise DataError(
            f"data-source 'folktables' needs the {ACS_YEAR} {ACS_HORIZON} PUMS person file of {missing[0]}, "
            f"expected at '{folktables_file(data_dir, missing[0])}' (data-dir '{data_dir}'), which does not "
            f"exist{more}; download it with `{DOWNLOAD} --data-dir {data_dir} --states {','.join(missing)}` "
            f"(needs internet), or pick another data-source: {others}"
        )


def check_sample(path: Path, task: Task) -> tuple[str, ...]:
    """Check a bundled sample like a table; a missing or broken file says how to rebuild it."""
    try:
        return check_table(path, task, name="sample file")
    except DataError as err:
        hint = "" if path.is_file() else f"; or, {PACKAGED_COPY}"
        raise DataError(f"{err}; rebuild it with {REBUILD_SAMPLE[task.name]}{hint}") from err


def _auto_kind(data_path: str, folk_dir: Path, states: tuple[str, ...], task: Task, sample: Path) -> tuple[str, str]:
    """`auto`'s choice from local files alone, and why (recorded in config.json)."""
    if data_path:
        return "table", "auto: data-path is set"
    if _folktables_cached(folk_dir, states or FOLKTABLES_STATES):
        return "folktables", f"auto: folktables cache {folk_dir} holds every state"
    why = f"no data-path, folktables cache {folk_dir} incomplete"
    if not sample.is_file():
        return "synthetic", f"{why}, no sample file {sample} (rebuild it with {REBUILD_SAMPLE[task.name]}; or, {PACKAGED_COPY})"
    lacking = sorted(set(states) - set(check_sample(sample, task)))
    if lacking:
        return "synthetic", f"{why}, the sample lacks state(s) {', '.join(lacking)}"
    return "sample", f"auto: {why}"


def resolve_source(
    kind: str, data_path: str, data_dir: str, states: tuple[str, ...], task: Task, sample: Path | None = None
) -> Source:
    """Decide which source runs (resolving `auto`) and which states it serves; fail clearly.

    `auto` takes `table` when data-path is set, else `folktables` when its root holds every
    state asked for, else the task's bundled `sample` (if it holds those states), else
    synthetic data with a banner. For `sample`, a data-path names the sample file (the
    pre-flight check pins the checkout's copy that way); `sample` is the default location,
    else `SAMPLES[task.name]`.
    """
    sample = sample or SAMPLES[task.name]
    folk_dir = Path(data_dir) if data_dir else default_data_dir()
    note = ""
    if kind == "auto":
        kind, note = _auto_kind(data_path, folk_dir, states, task, sample)
        if kind == "synthetic":
            print(
                "\n" + "!" * 78 + f"\n!! data-source 'auto': running on SYNTHETIC data.\n!! Why: {note}.\n"
                + "!" * 78 + "\n",
                file=sys.stderr,
                flush=True,
            )
            note = f"auto: {note}"
    if kind == "table":
        path = Path(data_path).resolve()
        return Source("table", str(path), _select_states(check_table(path, task), states, f"'{path}'"), note)
    if kind == "sample":
        path = Path(data_path).resolve() if data_path else sample.resolve()
        held = check_sample(path, task)
        return Source("sample", str(path), _select_states(held, states, f"the sample '{path}'"), note)
    if kind == "folktables":
        folk_states = _select_states(FOLKTABLES_STATES, states, "folktables")
        check_folktables(folk_dir, folk_states)
        return Source("folktables", str(folk_dir.resolve()), folk_states, note)
    return Source("synthetic", "", _select_states(FOLKTABLES_STATES, states, "synthetic data"), note)


@lru_cache(maxsize=2)
def _table_frame(path: str, columns: tuple[str, ...]) -> pd.DataFrame:
    """The whole table's task columns, read once per worker process."""
    return _read_table(Path(path), list(columns))


def _folktables_problem(task: Task, raw: pd.DataFrame, state: str) -> pd.DataFrame:
    from folktables import acs

    problem = getattr(acs, task.folktables_problem)
    features, label, _ = problem.df_to_pandas(raw)
    frame = features.astype(np.int64)
    frame["label"] = label.to_numpy().ravel().astype(bool)
    frame.insert(0, "STATE", state)
    return frame


def records_file(source: Source, state: str) -> Path | None:
    """The file `state_records` reads a state's records from; None for synthetic data."""
    if source.kind in ("table", "sample"):
        return Path(source.path)
    if source.kind == "folktables":
        return folktables_file(Path(source.path), state)
    return None


def blanks_as_missing(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Blank answers as `MISSING` (0), the code folktables 0.0.12 gives them. Tables written by
    other folktables versions or tools hold -1 (the shared MA table does); no PUMS code is
    negative, so every negative code is a blank. Columns without one are left untouched."""
    for column in columns:
        negative = frame[column] < 0
        if negative.any():
            frame[column] = frame[column].mask(negative, MISSING)
    return frame


def state_records(
    source: Source, task: Task, state: str, seed: int, synthetic_rows: int, reversed_states: tuple[str, ...] = ()
) -> pd.DataFrame:
    """One state's records: `STATE`, the task's raw feature codes and a boolean `label`."""
    if source.kind in ("table", "sample"):
        table = _table_frame(source.path, ("STATE", *task.columns, "label"))
        frame = table[table["STATE"] == state].reset_index(drop=True)
        frame["label"] = frame["label"].astype(bool)
        return blanks_as_missing(frame, task.columns)
    if source.kind == "folktables":
        from folktables import ACSDataSource

        reader = ACSDataSource(survey_year=ACS_YEAR, horizon=ACS_HORIZON, survey="person", root_dir=source.path)
        return _folktables_problem(task, reader.get_data(states=[state], download=False), state)
    raw = synthetic_pums([state], seed=seed, rows_per_state=synthetic_rows or None, reversed_states=reversed_states)
    return _folktables_problem(task, raw, state)
