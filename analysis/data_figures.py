"""How group and label rates vary between states: the (group, label) cell fractions per state.

These are the real-data counterparts of the analytic model's group rates and label rates, so the
figures show how heterogeneous the clients are before any training.
`python -m analysis.data_figures --data PATH --task income --out DIR` for a prepared table, or
`--source folktables|synthetic [--data-dir DIR] [--states CA,NY]` for the app's other sources
(employment data comes only from those).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from analysis.cli import OneLineErrorParser
from clients.sources import DataError, resolve_source, state_records
from core.tasks import ATTRIBUTES, TASKS, protected_groups

REQUIRED_COLUMNS = ("STATE", "SEX", "RAC1P", "label")
LABEL_NAMES = {
    "income": {1: "income > $50k", 0: "income ≤ $50k"},
    "employment": {1: "employed", 0: "not employed"},
}
ATTRIBUTE_TITLES = {"sex": "sex", "race": "race (White vs Non-White)"}
GROUP_TITLES = {"male": "Male", "female": "Female", "white": "White", "non-white": "Non-White"}
GROUP_COLORS = (("#1f4e9c", "#8fb3e8"), ("#c4501b", "#f2b48f"))  # (label 1, label 0) per group


def cell_fractions(frame: pd.DataFrame) -> pd.DataFrame:
    """Tidy rows (state, attribute, group, label, n, fraction); fractions sum to 1 per state
    and attribute.

    Every state gets all four cells per attribute, empty ones with n = 0, so plots never skip a bar.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"missing column(s): {', '.join(missing)}")
    if frame.empty:
        raise ValueError("no rows")
    if not frame["SEX"].isin([1, 2]).all():
        raise ValueError("column SEX must hold only 1 (male) and 2 (female)")
    if not frame["RAC1P"].isin(range(1, 10)).all():
        raise ValueError("column RAC1P must hold only race codes 1 to 9")
    if not frame["label"].isin([0, 1]).all():
        raise ValueError("column label must hold only booleans or 0/1")
    labels = frame["label"].astype(int).to_numpy()
    states = frame["STATE"].astype(str).to_numpy()
    parts = []
    for attribute, group_index in protected_groups(frame).items():
        names = np.array(ATTRIBUTES[attribute])
        counts = (
            pd.DataFrame({"state": states, "group": names[group_index], "label": labels})
            .value_counts()
            .reindex(
                pd.MultiIndex.from_product(
                    [sorted(set(states)), list(names), [1, 0]], names=["state", "group", "label"]
                ),
                fill_value=0,
            )
            .rename("n")
            .reset_index()
        )
        counts.insert(1, "attribute", attribute)
        parts.append(counts)
    cells = pd.concat(parts, ignore_index=True)
    cells["fraction"] = cells["n"] / cells.groupby(["state", "attribute"])["n"].transform("sum")
    return cells


def _cells(attribute: str) -> list[tuple[str, int]]:
    return [(g, y) for g in ATTRIBUTES[attribute] for y in (1, 0)]


def _cell_label(group: str, label: int, task: str) -> str:
    return f"{GROUP_TITLES[group]}, {LABEL_NAMES[task][label]}"


def _wide(table: pd.DataFrame, attribute: str) -> pd.DataFrame:
    """States as rows, the four (group, label) cells as columns in plotting order."""
    sub = table[table["attribute"] == attribute]
    wide = sub.pivot_table(
        index="state", columns=["group", "label"], values="fraction", aggfunc="sum"
    )
    return wide[_cells(attribute)]


def plot_cells_by_state(table: pd.DataFrame, attribute: str, task: str, path: Path) -> None:
    """Stacked bars, one per state, of the four cell fractions of `attribute`."""
    wide = _wide(table, attribute)
    x = np.arange(len(wide))
    fig = Figure(figsize=(max(8.0, 0.28 * len(wide) + 2), 5.5), layout="constrained")
    ax = fig.add_subplot()
    bottom = np.zeros(len(wide))
    for group, label in wide.columns:
        color = GROUP_COLORS[ATTRIBUTES[attribute].index(group)][0 if label == 1 else 1]
        values = wide[(group, label)].to_numpy()
        ax.bar(
            x, values, bottom=bottom, width=0.8, color=color, label=_cell_label(group, label, task)
        )
        bottom += values
    ax.set_xticks(x, wide.index, rotation=90, fontsize=8)
    ax.set_xlim(-0.6, len(wide) - 0.4)
    ax.set_ylim(0, 1)
    ax.set_xlabel("state")
    ax.set_ylabel("fraction of the state's samples")
    ax.set_title(
        f"ACS {task}: (group, label) cells by state, "
        f"protected attribute {ATTRIBUTE_TITLES[attribute]}"
    )
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=4, frameon=False)
    fig.savefig(path, dpi=120)


def plot_cell_histograms(table: pd.DataFrame, attribute: str, task: str, path: Path) -> None:
    """One histogram per cell of its fraction across states: the spread clients really have."""
    wide = _wide(table, attribute)
    fig = Figure(figsize=(10, 7), layout="constrained")
    axes = fig.subplots(2, 2)
    for ax, (group, label) in zip(axes.flat, wide.columns, strict=True):
        values = wide[(group, label)].to_numpy()
        color = GROUP_COLORS[ATTRIBUTES[attribute].index(group)][0 if label == 1 else 1]
        ax.hist(values, bins=15, color=color, edgecolor="black", linewidth=0.5)
        ax.set_title(
            f"{_cell_label(group, label, task)}\nrange {values.min():.3f} – {values.max():.3f}"
        )
        ax.set_xlabel("fraction of the state's samples")
        ax.set_ylabel("number of states")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(
        f"ACS {task}: cell fractions across {len(wide)} states, {ATTRIBUTE_TITLES[attribute]}"
    )
    fig.savefig(path, dpi=120)


def write_figures(table: pd.DataFrame, task: str, out: Path) -> list[Path]:
    """The CSV and every PNG for `table` into `out`; returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "cell_fractions.csv"]
    table.to_csv(written[0], index=False)
    for attribute in ATTRIBUTES:
        bars = out / f"{task}_{attribute}_cells_by_state.png"
        hists = out / f"{task}_{attribute}_cell_histograms.png"
        plot_cells_by_state(table, attribute, task, bars)
        plot_cell_histograms(table, attribute, task, hists)
        written += [bars, hists]
    return written


def read_table(path: Path) -> pd.DataFrame:
    """The required columns of a parquet or CSV file; any problem is a ValueError naming it."""
    if not path.is_file():
        raise ValueError(f"data file {str(path)!r} does not exist")
    if path.suffix not in (".parquet", ".pq", ".csv"):
        raise ValueError(f"data file {str(path)!r}: unsupported format (use .parquet or .csv)")
    try:
        if path.suffix == ".csv":
            frame = pd.read_csv(path, usecols=lambda c: c in REQUIRED_COLUMNS)
        else:
            present = set(pq.read_schema(path).names)
            frame = pd.read_parquet(path, columns=[c for c in REQUIRED_COLUMNS if c in present])
    except Exception as error:  # the readers raise many types for the one problem: unreadable
        raise ValueError(f"data file {str(path)!r} is unreadable: {error}") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"data file {str(path)!r} lacks column(s): {', '.join(missing)}")
    return frame


def read_source(kind: str, task: str, data_dir: str, states: tuple[str, ...], seed: int) -> pd.DataFrame:
    """Every state's records from one of the app's data sources, as the clients would read them."""
    source = resolve_source(kind, "", data_dir, states, TASKS[task])
    return pd.concat([state_records(source, TASKS[task], s, seed, 0) for s in source.states], ignore_index=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineErrorParser(
        prog="python -m analysis.data_figures", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--data", type=Path, help="parquet or CSV with STATE, SEX, RAC1P, label")
    parser.add_argument("--source", choices=("table", "folktables", "synthetic"), default="table")
    parser.add_argument("--data-dir", default="", help="folktables cache (source folktables)")
    parser.add_argument("--states", default="", help="comma-separated state codes (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of synthetic data")
    parser.add_argument("--task", choices=sorted(TASKS), required=True)
    parser.add_argument("--out", type=Path, required=True, help="output directory (created)")
    args = parser.parse_args(argv)
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"argument --out: {str(args.out)!r} exists and is not a directory")
    if (args.source == "table") != (args.data is not None):
        parser.error("argument --data: give a table file with --source table (the default), and only then")
    states = tuple(s.strip().upper() for s in args.states.split(",") if s.strip())
    try:
        frame = (read_table(args.data) if args.source == "table"
                 else read_source(args.source, args.task, args.data_dir, states, args.seed))
        table = cell_fractions(frame)
    except (ValueError, DataError) as error:
        parser.error(str(error))
    for path in write_figures(table, args.task, args.out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
