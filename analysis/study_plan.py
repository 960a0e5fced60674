"""The study's plan: its grid (strategies x configurations x seeds, common and per-strategy keys) and
the runs it makes, checked before anything trains. Nothing here trains or reports.

`study.json` records the grid and every run's keys; a directory holding another study is refused.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from flwr.common.config import parse_config_args

from core.settings import ConfigError
from fl_app.config import config_keys
from strategies.algorithm import StrategySpec
from strategies.flower import NAMES as FLOWER_NAMES
from strategies.registry import STRATEGIES, own_keys, spec_for

REPO = Path(__file__).resolve().parent.parent
GRID_KEYS = ("strategies", "seeds", "lambdas", "out", "run-config", "strategy-config")
STUDY_KEYS = ("strategy", "seed", "results-dir", "resume")  # set by the study for every run
LAMBDA_KEY = "lambda"  # set by --lambdas for Fair-* strategies
DEFAULT_SEEDS = 5  # the paper averages over five seeds
DEFAULT_LAMBDAS = (1.0,)  # run.sh compare's default weight
LOCK_FILE = ".study.lock"


class StudyError(ValueError):
    """Bad study input, found before any run; the message names the option, key or file."""


# --- the strategy registry's part: the one place to rewire when strategies come from it -------------

def valid_strategies() -> tuple[str, ...]:
    """Strategy names a study accepts: the registry's, and Flower's built-ins."""
    return (*STRATEGIES, *FLOWER_NAMES)


def _spec(strategy: str) -> StrategySpec:
    try:
        return spec_for(strategy)
    except ConfigError as err:
        raise StudyError(str(err)) from None


def study_settings(strategy: str) -> dict[str, str]:
    """The paper's hyperparameters of a strategy (the registry's) as run-config literals, without
    `lambda` (the study's --lambdas axis); the user's keys override them."""
    return {k: literal(v, k) for k, v in _spec(strategy).study.items() if k != "lambda"}


def takes_lambda(strategy: str) -> bool:
    """Fair-* strategies weigh a fairness gap by `lambda`, the study's --lambdas axis."""
    return "lambda" in own_keys(_spec(strategy))


def is_personalized(strategy: str) -> bool:
    """Personalized FL: each client deploys its own or its cluster's model (not one global model,
    not local-only or centralized training)."""
    return _spec(strategy).personalized


# --- the grid -------------------------------------------------------------------------------------

def literal(value: Any, where: str) -> str:
    """A run-config value as flwr's --run-config parses it back: TOML scalars only."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise StudyError(f"{where}: {value!r} is not a finite number")
        return repr(value)
    if isinstance(value, str):
        if '"' in value:
            raise StudyError(f"{where}: a value may not contain a double quote, got {value!r}")
        return json.dumps(value)
    raise StudyError(f"{where}: {value!r} is not a string, number or boolean")


def parse_run_config(text: str, where: str = "--run-config") -> dict[str, Any]:
    """'k=v k2="s"' parsed exactly as flwr run parses it."""
    try:
        return parse_config_args([text]) if text.strip() else {}
    except (ValueError, click.ClickException) as error:
        message = error.format_message() if isinstance(error, click.ClickException) else str(error)
        raise StudyError(f"{where}: {message}") from None


def check_keys(keys: Mapping[str, Any], where: str, fair: bool = False) -> dict[str, str]:
    """Run-config keys checked against the app's and the study's own; returned as literals."""
    valid = [k for k in config_keys() if k not in (*STUDY_KEYS, LAMBDA_KEY)]
    unknown = sorted(set(keys) - set(valid) - {*STUDY_KEYS, LAMBDA_KEY})
    if unknown:
        raise StudyError(f"{where}: unknown config key(s) {', '.join(unknown)}; valid keys: {', '.join(valid)}")
    owned = [k for k in keys if k in STUDY_KEYS]
    if owned:
        raise StudyError(f"{where}: key(s) {', '.join(owned)} are set by the study for every run "
                         "(strategy: --strategies, seed: --seeds, results-dir: --out)")
    if LAMBDA_KEY in keys:
        raise StudyError(f"{where}: 'lambda' of Fair-* strategies is the study's --lambdas (grid: lambdas)")
    return {k: literal(v, f"{where} key '{k}'") for k, v in keys.items()}


def parse_seeds(value: Any, where: str = "--seeds") -> tuple[int, ...]:
    """N (an integer >= 1) means seeds 0..N-1; a list (or text with commas: '0,1,2', '7,') names them."""
    hint = "give N (seeds 0..N-1) or a comma-separated list such as 0,1,2"
    if isinstance(value, str):
        text = value.strip()
        if "," not in text:
            value = int(text) if re.fullmatch(r"\d+", text) else None
        else:
            parts = [p.strip() for p in text.split(",") if p.strip()]
            if not parts or not all(re.fullmatch(r"\d+", p) for p in parts):
                raise StudyError(f"{where}: {text!r} is not a list of non-negative integers; {hint}")
            value = [int(p) for p in parts]
    if isinstance(value, bool) or value is None:
        raise StudyError(f"{where}: {value!r} is not a number of seeds; {hint}")
    if isinstance(value, int):
        if value < 1:
            raise StudyError(f"{where}: the number of seeds must be >= 1, got {value}; {hint}")
        return tuple(range(value))
    if not isinstance(value, list) or not value or not all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value):
        raise StudyError(f"{where}: {value!r} is not a list of non-negative integers; {hint}")
    if len(set(value)) != len(value):
        raise StudyError(f"{where}: seed(s) listed twice: {value}")
    return tuple(value)


def parse_lambdas(value: Any, where: str = "--lambdas") -> tuple[float, ...]:
    """Comma-separated (or a list of) finite weights >= 0, none twice."""
    items = [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise StudyError(f"{where}: {value!r} is not a list of weights such as 0.5,1,5")
    weights = []
    for item in items:
        try:
            weight = float(item) if not isinstance(item, bool) else math.nan
        except (TypeError, ValueError):
            weight = math.nan
        if not math.isfinite(weight) or weight < 0:
            raise StudyError(f"{where}: {item!r} is not a finite weight >= 0")
        weights.append(weight)
    if len(set(weights)) != len(weights):
        raise StudyError(f"{where}: a weight is listed twice: {items}")
    return tuple(weights)


def parse_strategies(value: Any, where: str = "--strategies") -> tuple[str, ...]:
    names = value.replace(",", " ").split() if isinstance(value, str) else value
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise StudyError(f"{where}: {value!r} is not a list of strategy names")
    valid = valid_strategies()
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise StudyError(f"{where}: unknown strategy {', '.join(unknown)}; valid choices: {', '.join(valid)}")
    if len(set(names)) != len(names):
        raise StudyError(f"{where}: a strategy is listed twice: {' '.join(names)}")
    return tuple(names)


@dataclass(frozen=True)
class Grid:
    """What defines a study: strategies, seeds, Fair-* weights, common and per-strategy run-config keys
    (as run-config literals)."""

    strategies: tuple[str, ...]
    seeds: tuple[int, ...]
    lambdas: tuple[float, ...]
    run_config: dict[str, str] = field(default_factory=dict)
    strategy_config: dict[str, dict[str, str]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"strategies": list(self.strategies), "seeds": list(self.seeds), "lambdas": list(self.lambdas),
                "run-config": self.run_config, "strategy-config": self.strategy_config}


def read_grid_file(path: Path) -> dict[str, Any]:
    """The grid file's table, its keys checked (values are checked with the command-line ones)."""
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as error:
        raise StudyError(f"--grid: cannot read {str(path)!r}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise StudyError(f"--grid: {path} is not valid TOML: {error}") from None
    unknown = sorted(set(data) - set(GRID_KEYS))
    if unknown:
        raise StudyError(f"--grid: {path} has unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(GRID_KEYS)}")
    for key in ("run-config", "strategy-config"):
        if key in data and not isinstance(data[key], dict):
            raise StudyError(f"--grid: {path}: '{key}' must be a table ([{key}])")
    for strategy, keys in data.get("strategy-config", {}).items():
        if not isinstance(keys, dict):
            raise StudyError(f"--grid: {path}: 'strategy-config.{strategy}' must be a table of run-config keys")
    nested = [k for k, v in data.get("run-config", {}).items() if isinstance(v, dict)]
    if nested:
        raise StudyError(f"--grid: {path}: run-config key(s) {', '.join(nested)} must be values, not tables")
    return data


def build_grid(args: argparse.Namespace) -> tuple[Grid, Path]:
    """The study's grid and output directory from --grid (if any) with the command line on top."""
    data = read_grid_file(args.grid) if args.grid else {}
    source = f"--grid {args.grid}"
    strategies = parse_strategies(args.strategies if args.strategies is not None
                                  else data.get("strategies", " ".join(valid_strategies())),
                                  "--strategies" if args.strategies is not None else f"{source}: strategies")
    seeds = parse_seeds(args.seeds if args.seeds is not None else data.get("seeds", DEFAULT_SEEDS),
                        "--seeds" if args.seeds is not None else f"{source}: seeds")
    fair = [s for s in strategies if takes_lambda(s)]
    given = args.lambdas if args.lambdas is not None else data.get("lambdas")
    where = "--lambdas" if args.lambdas is not None else f"{source}: lambdas"
    if given is not None and not fair:
        raise StudyError(f"{where}: weights apply to Fair-* strategies and none is in the study "
                         f"({' '.join(strategies)})")
    lambdas = parse_lambdas(given, where) if given is not None else (DEFAULT_LAMBDAS if fair else ())
    common = check_keys(data.get("run-config", {}), f"{source}: run-config")
    common.update(check_keys(parse_run_config(args.run_config or ""), "--run-config"))
    per_strategy = {}
    for strategy, keys in data.get("strategy-config", {}).items():
        where = f"{source}: strategy-config.{strategy}"
        if strategy not in valid_strategies():
            raise StudyError(f"{where}: unknown strategy '{strategy}'; valid choices: {', '.join(valid_strategies())}")
        if strategy in strategies:  # keys of a strategy left out with --strategies are not part of the study
            per_strategy[strategy] = check_keys(keys, where)
    if args.out is None and not isinstance(data.get("out", ""), str):
        raise StudyError(f"{source}: out must be a directory name, got {data['out']!r}")
    out = args.out if args.out is not None else (Path(data["out"]) if data.get("out") else None)
    if out is None:
        raise StudyError("--out: the study directory is required (or 'out' in the grid file)")
    return Grid(strategies, seeds, lambdas, common, per_strategy), out.expanduser().resolve()


# --- the plan -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PlannedRun:
    """One run of the study: its strategy, configuration label, seed, directory name and keys."""

    strategy: str
    config: str  # "lambda=1" for Fair-* strategies, else "-"
    seed: int
    name: str
    keys: dict[str, str]  # run-config literals, without results-dir and resume

    def run_config(self, run_dir: Path, resume: bool) -> str:
        keys = {**self.keys, "results-dir": json.dumps(str(run_dir))}
        if resume:
            keys["resume"] = json.dumps(str(run_dir))
        return " ".join(f"{k}={v}" for k, v in keys.items())

    @property
    def run_dir(self) -> str:
        return f"runs/{self.name}"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "", text.replace(":", "-"))


def configurations(grid: Grid, strategy: str) -> list[tuple[str, dict[str, str]]]:
    """(label, keys) of each configuration of a strategy: one per weight for Fair-*, else one."""
    if takes_lambda(strategy):
        return [(f"lambda={w:g}", {LAMBDA_KEY: repr(w)}) for w in grid.lambdas]
    return [("-", {})]


def plan(grid: Grid) -> list[PlannedRun]:
    """Every run, seed by seed, so that early seeds give complete comparisons first.

    Keys in order of precedence, later winning: study settings, the weight, common, per-strategy keys.
    """
    runs = []
    for seed in grid.seeds:
        for strategy in grid.strategies:
            for label, extra in configurations(grid, strategy):
                keys = {"strategy": json.dumps(strategy), **study_settings(strategy), **extra, **grid.run_config,
                        **grid.strategy_config.get(strategy, {}), "seed": str(seed)}
                name = "_".join(p for p in (_slug(strategy), _slug(label) if label != "-" else "", f"seed{seed}") if p)
                runs.append(PlannedRun(strategy, label, seed, name, keys))
    return runs


def study_record(grid: Grid, runs: Sequence[PlannedRun]) -> dict[str, Any]:
    """study.json: the grid and every run's keys, which together identify the study."""
    return {"grid": grid.to_json(),
            "runs": [{"strategy": r.strategy, "config": r.config, "seed": r.seed, "run_dir": r.run_dir,
                      "keys": r.keys} for r in runs]}


def study_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What differs between two study.json records, in words (empty: the same study)."""
    found = []
    for key, value in new["grid"].items():
        before = old.get("grid", {}).get(key)
        if before != value:
            found.append(f"{key} {json.dumps(before)} there, {json.dumps(value)} now")
    if not found:
        before = {r["run_dir"]: r["keys"] for r in old.get("runs", [])}
        for run in new["runs"]:
            was = before.get(run["run_dir"], {})
            changed = sorted(k for k in set(was) | set(run["keys"]) if was.get(k) != run["keys"].get(k))
            if changed:
                found.append(f"{run['run_dir']}: " + "; ".join(
                    f"{k} {was.get(k, 'unset')} there, {run['keys'].get(k, 'unset')} now" for k in changed))
    return found


def check_out_dir(out: Path, record: Mapping[str, Any]) -> None:
    """Refuse a directory that is a file, holds another study, or holds files but no study."""
    if out.exists() and not out.is_dir():
        raise StudyError(f"--out: {str(out)!r} exists and is not a directory")
    if not out.is_dir() or not [p for p in out.iterdir() if p.name != LOCK_FILE]:
        return
    stored = out / "study.json"
    if not stored.is_file():
        raise StudyError(f"--out: {str(out)!r} is not empty and holds no study.json; choose a new directory")
    try:
        old = json.loads(stored.read_text())
    except (OSError, ValueError) as error:
        raise StudyError(f"--out: cannot read {stored}: {error}") from None
    differences = study_differences(old, record)
    if differences:
        raise StudyError(f"--out: {str(out)!r} holds a different study ({stored}): " + "; ".join(differences)
                         + ". Use a new --out for a new study.")
