"""Per-state change of accuracy and group-fairness gaps of a strategy relative to FedAvg and local.

Headline means can hide that personalization helps some states and hurts others, so every state
is compared on its own and the states that gain and lose are counted. FedAvg (one shared model)
is one reference point; a `local` run (no federation at all), when given, is the other, and every
other run, FedAvg included, is compared against it too.
`python -m analysis.compare FEDAVG_DIR OTHER_DIR [OTHER_DIR ...] [--out FILE.csv] [--round N]`.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.cli import OneLineErrorParser
from core.counts import CELLS
from core.tasks import ATTRIBUTES
from recorder.files import COUNTS_COLUMNS, METRICS_COLUMNS, ResultsError

REQUIRED_FILES = ("config.json", "counts.csv", "metrics.csv", "summary.json")
CLUSTERS_PREFIX = ["round", "state", "cluster"]
GAPS = ("sp_gap", "eo_gap", "eodds_gap")
QUANTITIES: tuple[tuple[str, str], ...] = (
    ("", "accuracy"),
    *((attribute, gap) for attribute in ATTRIBUTES for gap in GAPS),
)
BASELINES = ("fedavg", "local")  # the reference points every other strategy is compared against
OUTCOMES = ("gain", "loss", "tie", "undefined")
TIE_TOLERANCE = 1e-12  # values from the same counts are equal; only summation noise is ignored
NOT_SETTINGS = ("seed", "results-dir")  # config keys that do not define a configuration
SHORT = {"sp_gap": "SP", "eo_gap": "EO", "eodds_gap": "EOdds"}


def compare_columns(baseline: str) -> list[str]:
    """The columns of a comparison; the baseline's values are in a column named after it."""
    return ["strategy", "state", "attribute", "metric", baseline, "other", "delta", "outcome"]


COMPARE_COLUMNS = compare_columns("fedavg")


def baseline_path(path: Path, baseline: str) -> Path:
    """`path` for fedavg, whose files keep the names they had before local was a baseline; else the
    same name with `_vs_local` before the extension."""
    return path if baseline == "fedavg" else path.with_name(f"{path.stem}_vs_{baseline}{path.suffix}")


def title_suffix(baseline: str) -> str:
    """'' for fedavg, whose titles stay as they were; else ' against local'."""
    return "" if baseline == "fedavg" else f" against {baseline}"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ResultsError(f"{path} is unreadable: {error}") from None
    if not isinstance(value, dict):
        raise ResultsError(f"{path} does not hold a JSON object")
    return value


def _numbers(path: Path, frame: pd.DataFrame, column: str, dtype: Any) -> pd.Series:
    """The column as `dtype`; empty cells are missing values, allowed unless dtype is int64."""
    text = frame[column].replace("", None)
    if dtype is np.int64 and text.isna().any():
        raise ResultsError(f"{path}: column {column} has empty cells")
    try:
        return pd.to_numeric(text).astype(dtype)
    except (ValueError, TypeError):
        kind = "numbers" if dtype is np.float64 else "integers"
        raise ResultsError(f"{path}: column {column} holds values that are not {kind}") from None


def _read_csv(path: Path, columns: Sequence[str], integers: Sequence[str] = ("round",)) -> pd.DataFrame:
    """Text columns stay text (a state code such as NA is not a missing value); numbers are checked.

    `integers` must be filled; `cluster` (nullable), `value` and `loss_*` may be empty.
    """
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise ResultsError(f"{path} is unreadable: {error}") from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ResultsError(f"{path} lacks column(s): {', '.join(missing)}")
    if frame.empty:
        raise ResultsError(f"{path} has no rows")
    for column in integers:
        frame[column] = _numbers(path, frame, column, np.int64)
    frame["cluster"] = _numbers(path, frame, "cluster", "Int64")
    for column in [c for c in frame.columns if c == "value" or c.startswith("loss_")]:
        frame[column] = _numbers(path, frame, column, np.float64)
    return frame


@dataclass(frozen=True)
class RunResults:
    """The contract files of one results directory, read and checked once."""

    path: Path
    config: dict[str, Any]
    counts: pd.DataFrame
    metrics: pd.DataFrame
    summary: dict[str, Any]
    clusters: pd.DataFrame | None

    @classmethod
    def load(cls, path: Path | str) -> RunResults:
        """Read a results directory; any missing or malformed contract file is a ResultsError."""
        path = Path(path)
        if not path.is_dir():
            raise ResultsError(f"{path} is not a directory")
        missing = [name for name in REQUIRED_FILES if not (path / name).is_file()]
        if missing:
            raise ResultsError(f"{path} is not a results directory: missing {', '.join(missing)}")
        config = _read_json(path / "config.json")
        for keys in (("config", "strategy"), ("config", "task"), ("data", "states"), ("seed",)):
            node: Any = config
            for key in keys:
                if not isinstance(node, dict) or key not in node:
                    raise ResultsError(f"{path / 'config.json'} lacks {'.'.join(keys)}")
                node = node[key]
        if not isinstance(config["data"]["states"], list):
            raise ResultsError(f"{path / 'config.json'}: data.states is not a list of state codes")
        counts = _read_csv(path / "counts.csv", COUNTS_COLUMNS, ("round", "n", *CELLS))
        metrics = _read_csv(path / "metrics.csv", METRICS_COLUMNS)
        clusters = None
        if (path / "clusters.csv").is_file():
            clusters = _read_csv(path / "clusters.csv", CLUSTERS_PREFIX)
        return cls(path, config, counts, metrics, _read_json(path / "summary.json"), clusters)

    @property
    def strategy(self) -> str:
        return str(self.config["config"]["strategy"])

    @property
    def task(self) -> str:
        return str(self.config["config"]["task"])

    @property
    def seed(self) -> int:
        return int(self.config["seed"])

    @property
    def states(self) -> tuple[str, ...]:
        return tuple(self.config["data"]["states"])

    @property
    def rounds(self) -> list[int]:
        return sorted(self.metrics["round"].unique().tolist())

    @property
    def final_round(self) -> int:
        return self.rounds[-1]

    def settings(self) -> dict[str, Any]:
        """Everything that defines the configuration except the seed: run config and data."""
        data = self.config["data"]
        run = {k: v for k, v in self.config["config"].items() if k not in NOT_SETTINGS}
        return {**run, "data": {k: data.get(k) for k in ("source", "path", "states")}}

    def deployed_counts(self) -> pd.DataFrame:
        """counts.csv rows of the deployed model (perfedavg also logs its unadapted global one)."""
        if "model" not in self.counts:
            return self.counts
        return self.counts[self.counts["model"] == "deployed"]

    def state_values(self, round: int) -> pd.DataFrame:
        """Accuracy and each gap per state at `round`, one row per (state, attribute, metric)."""
        rows = self.metrics[(self.metrics["round"] == round) & self.metrics["state"].isin(self.states)]
        values = rows.set_index(["state", "attribute", "metric"])["value"]
        index = pd.MultiIndex.from_tuples(
            [(s, a, m) for s in self.states for a, m in QUANTITIES], names=values.index.names
        )
        return values.reindex(index).reset_index()


def data_differences(a: RunResults, b: RunResults, seed: bool = True) -> list[str]:
    """What stops two runs from being compared state by state: task, data, states, seed."""
    found = []
    for name, get in (
        ("task", lambda r: r.task),
        ("data source", lambda r: r.config["data"].get("source")),
        ("data path", lambda r: r.config["data"].get("path")),
        ("synthetic rows", lambda r: r.config["config"].get("synthetic-rows")),
        *((("seed", lambda r: r.seed),) if seed else ()),
    ):
        if get(a) != get(b):
            found.append(f"{name} {get(a)!r} in {a.path} vs {get(b)!r} in {b.path}")
    only_a, only_b = sorted(set(a.states) - set(b.states)), sorted(set(b.states) - set(a.states))
    if only_a or only_b:
        found.append(
            f"states: only in {a.path}: {', '.join(only_a) or 'none'}; "
            f"only in {b.path}: {', '.join(only_b) or 'none'}"
        )
    return found


def run_labels(runs: Sequence[RunResults]) -> list[str]:
    """The strategy name, plus the settings that tell apart runs of one strategy (e.g. k=3)."""
    labels = []
    for run in runs:
        same = [r for r in runs if r.strategy == run.strategy]
        mine = run.settings()
        varying = sorted(k for k in mine if k != "data" and any(r.settings().get(k) != mine[k] for r in same))
        if varying:
            labels.append(f"{run.strategy} ({', '.join(f'{k}={mine[k]}' for k in varying)})")
        elif len(same) > 1:
            labels.append(f"{run.strategy} ({run.path.name})")
        else:
            labels.append(run.strategy)
    return labels


def outcomes(metric: pd.Series, delta: pd.Series) -> pd.Series:
    """gain (accuracy up or gap down), loss, tie or undefined (a value is NaN) per row."""
    better = delta.where(metric == "accuracy", -delta)
    outcome = np.select(
        [delta.isna(), better.abs() <= TIE_TOLERANCE, better > 0], ["undefined", "tie", "gain"], "loss"
    )
    return pd.Series(outcome, index=delta.index, dtype=object)


def compare_runs(base: RunResults, other: RunResults, round: int | None = None,
                 label: str | None = None) -> pd.DataFrame:
    """Per state, accuracy and gaps of `other` minus those of a baseline run, fedavg or local.

    Columns: compare_columns(base.strategy). `round` defaults to the last round both runs reached;
    the round used is in `.attrs["round"]`.
    """
    if base.strategy not in BASELINES:
        raise ValueError(f"{base.path} is a {base.strategy} run, not {' or '.join(BASELINES)}")
    problems = data_differences(base, other)
    if problems:
        raise ValueError("runs are not comparable: " + "; ".join(problems))
    if round is None:
        round = min(base.final_round, other.final_round)
    for run in (base, other):
        if round not in run.rounds:
            raise ValueError(f"round {round} is not in {run.path} (rounds {run.rounds[0]}-{run.final_round})")
    baseline = base.strategy
    frame = base.state_values(round).rename(columns={"value": baseline}).merge(
        other.state_values(round).rename(columns={"value": "other"}), on=["state", "attribute", "metric"]
    )
    frame.insert(0, "strategy", label or other.strategy)
    frame["delta"] = frame["other"] - frame[baseline]
    frame["outcome"] = outcomes(frame["metric"], frame["delta"])
    frame = frame[compare_columns(baseline)]
    frame.attrs["round"] = round
    return frame


def compare_against(base: RunResults, runs: Sequence[RunResults], labels: Sequence[str],
                    round: int | None = None) -> list[pd.DataFrame]:
    """compare_runs of every run but the baseline itself, in the order given, under its label."""
    return [compare_runs(base, run, round, label) for run, label in zip(runs, labels, strict=True) if run is not base]


def gain_loss_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per strategy and quantity: how many states gain, lose, tie or are undefined; mean delta."""
    rows = []
    for (strategy, attribute, metric), part in frame.groupby(["strategy", "attribute", "metric"], sort=False):
        tally = part["outcome"].value_counts()
        rows.append(
            {"strategy": strategy, "attribute": attribute, "metric": metric, "states": len(part),
             **{outcome: int(tally.get(outcome, 0)) for outcome in OUTCOMES},
             "mean_delta": part["delta"].mean()}
        )
    return pd.DataFrame(rows)


def quantity_name(attribute: str, metric: str) -> str:
    """Readable name such as 'SP gap (sex)' or 'accuracy'."""
    base = "accuracy" if metric == "accuracy" else f"{SHORT[metric]} gap"
    return f"{base} ({attribute})" if attribute else base


def fmt(value: float, signed: bool = False) -> str:
    """Three decimals, n/a for NaN, with a sign for deltas."""
    if value is None or not np.isfinite(value):
        return "n/a"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub Markdown table; cells are written with str()."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def summary_markdown(summary: pd.DataFrame) -> str:
    """Gain/loss counts per strategy and quantity."""
    rows = [
        [r.strategy, quantity_name(r.attribute, r.metric), r.gain, r.loss, r.tie, r.undefined, r.states,
         fmt(r.mean_delta, signed=True)]
        for r in summary.itertuples(index=False)
    ]
    header = ["strategy", "quantity", "states gaining", "states losing", "ties", "undefined", "states",
              "mean Δ"]
    return markdown_table(header, rows)


def per_state_markdown(frame: pd.DataFrame) -> str:
    """One row per state of one strategy: Δ of every quantity (other - baseline)."""
    delta = frame.set_index(["state", "attribute", "metric"])["delta"]
    header = ["state", *(f"Δ {quantity_name(a, m)}" for a, m in QUANTITIES)]
    rows = [
        [state, *(fmt(delta.get((state, a, m), np.nan), signed=True) for a, m in QUANTITIES)]
        for state in pd.unique(frame["state"])
    ]
    return markdown_table(header, rows)


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    """Write via a temporary file and a rename, so a failed write leaves no partial CSV."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        frame.to_csv(tmp, index=False, lineterminator="\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def comparison_markdown(base: RunResults, frames: Sequence[pd.DataFrame], compared: Sequence[RunResults]) -> str:
    """The comparison against one baseline: the runs compared, gain/loss counts, per-state tables."""
    against = title_suffix(base.strategy)
    lines = [f"# Change relative to {base.strategy} ({base.path}), other - {base.strategy}\n"]
    lines += [f"- {frame['strategy'].iloc[0]}: {other.path}, round {frame.attrs['round']} "
              f"(runs end at rounds {base.final_round} and {other.final_round})"
              for frame, other in zip(frames, compared, strict=True)]
    lines += [f"\n## States gaining and losing{against} (gain = higher accuracy or smaller gap)\n",
              summary_markdown(gain_loss_summary(pd.concat(frames, ignore_index=True)))]
    for frame in frames:
        lines += [f"\n## {frame['strategy'].iloc[0]}: per state{against}\n", per_state_markdown(frame)]
    return "\n".join(lines)


def _baselines(parser: OneLineErrorParser, runs: Sequence[RunResults]) -> list[RunResults]:
    """The runs to compare against: the one fedavg run, then the local run if there is one.

    Any other number of them, or runs on different data, is a usage error.
    """
    fedavgs = [r for r in runs if r.strategy == "fedavg"]
    if len(fedavgs) != 1:
        found = ", ".join(str(r.path) for r in fedavgs) or "none"
        parser.error(f"need exactly one fedavg run (config.json strategy) to compare against; found {found}")
    if len(runs) == 1:
        parser.error("no run of another strategy to compare with fedavg")
    locals_ = [r for r in runs if r.strategy == "local"]
    if len(locals_) > 1:
        parser.error("need at most one local run (config.json strategy) to compare against; found "
                     + ", ".join(str(r.path) for r in locals_))
    problems = [p for other in runs if other is not fedavgs[0] for p in data_differences(fedavgs[0], other)]
    if problems:
        parser.error("runs are not comparable: " + "; ".join(problems))
    return [*fedavgs, *locals_]


def main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineErrorParser(prog="python -m analysis.compare", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, metavar="RESULTS_DIR",
                        help="results directories of one seed and data set, one of them fedavg, at most one local")
    parser.add_argument("--out", type=Path, metavar="FILE.csv",
                        help="also write the tidy table here (against local: FILE_vs_local.csv)")
    parser.add_argument("--round", type=int, metavar="N", help="round to compare (default: the final one)")
    args = parser.parse_args(argv)
    if args.round is not None and args.round < 1:
        parser.error(f"argument --round: must be >= 1, got {args.round}")
    if args.out is not None and (args.out.is_dir() or not args.out.parent.is_dir()):
        parser.error(f"argument --out: {str(args.out)!r} is a directory or its directory does not exist")
    try:
        runs = [RunResults.load(path) for path in args.runs]
    except ResultsError as error:
        parser.error(str(error))
    bases = _baselines(parser, runs)
    labels = run_labels(runs)
    try:
        frames = [compare_against(base, runs, labels, args.round) for base in bases]
    except ValueError as error:
        parser.error(str(error))
    outs = [] if args.out is None else [baseline_path(args.out, base.strategy) for base in bases]
    for out, base_frames in zip(outs, frames):  # nothing to write without --out
        _write_csv(pd.concat(base_frames, ignore_index=True), out)
    print("\n\n".join(comparison_markdown(base, base_frames, [r for r in runs if r is not base])
                      for base, base_frames in zip(bases, frames, strict=True)))
    for out in outs:
        print(f"wrote {out}", file=sys.stderr)  # stdout stays pure Markdown (run.sh tees it)
    return 0


if __name__ == "__main__":
    sys.exit(main())
