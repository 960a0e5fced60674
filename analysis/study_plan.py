"""The study's plan: its grid (strategies x configurations x seeds, common and per-strategy keys) and
the runs it makes, checked before anything trains. Nothing here trains or reports.

Beyond one configuration per strategy (one per weight for Fair-*), a grid may name extra arms
(`[arms.<name>]`: a strategy and its keys, e.g. FedAvg at IFCA's settings) and a tuning grid (`[tune]`,
analysis/study_tune.py), whose chosen setting runs on every seed as arm "tuned".

`study.json` records the grid and every run's keys known before tuning; a directory holding another
study is refused.
"""

from __future__ import annotations

import argparse
import itertools
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
from fl_app.config import PRESETS, config_keys, preset_values
from strategies.algorithm import StrategySpec
from strategies.flower import NAMES as FLOWER_NAMES
from strategies.registry import STRATEGIES, own_keys, spec_for

REPO = Path(__file__).resolve().parent.parent
GRID_KEYS = ("strategies", "seeds", "lambdas", "out", "run-config", "strategy-config", "arms", "tune")
STUDY_KEYS = ("strategy", "seed", "results-dir", "resume")  # set by the study for every run
LAMBDA_KEY = "lambda"  # set by --lambdas for Fair-* strategies
DEFAULT_SEEDS = 5  # the paper averages over five seeds
DEFAULT_LAMBDAS = (1.0,)  # run.sh compare's default weight
LOCK_FILE = ".study.lock"
PAPER = "-"  # the configuration label of a strategy's paper settings
TUNED = "tuned"  # the arm running the setting chosen on validation (analysis/study_tune.py)
ARM_NAME = re.compile(r"[A-Za-z][A-Za-z0-9.-]*")
RESERVED_ARMS = (TUNED, "tune", "lambda")
TUNE_OWN = ("seeds", "strategies")  # [tune] keys that are not run-config keys
DEFAULT_TUNE_SEEDS = (0,)


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


FAIR_BASES = {"fair-ifca": "ifca", "fair-flhc": "flhc"}  # a Fair-* strategy at lambda = 0 is its base, exactly


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
class ExtraArm:
    """An extra named configuration of one strategy: its run-config keys over the strategy's."""

    strategy: str
    keys: dict[str, str]


@dataclass(frozen=True)
class Tune:
    """The tuning grid: each key's candidate values (literals), the tuning seeds, the tuned strategies."""

    values: dict[str, tuple[str, ...]]
    seeds: tuple[int, ...]
    strategies: tuple[str, ...]

    def candidates(self) -> list[dict[str, str]]:
        """Every combination of the values, the first key varying slowest."""
        return [dict(zip(self.values, combo)) for combo in itertools.product(*self.values.values())]

    def to_json(self) -> dict[str, Any]:
        return {**{k: list(v) for k, v in self.values.items()}, "seeds": list(self.seeds),
                "strategies": list(self.strategies)}


@dataclass(frozen=True)
class Grid:
    """What defines a study: strategies, seeds, Fair-* weights, common and per-strategy run-config keys
    (as run-config literals), extra named arms and the tuning grid."""

    strategies: tuple[str, ...]
    seeds: tuple[int, ...]
    lambdas: tuple[float, ...]
    run_config: dict[str, str] = field(default_factory=dict)
    strategy_config: dict[str, dict[str, str]] = field(default_factory=dict)
    arms: dict[str, ExtraArm] = field(default_factory=dict)
    tune: Tune | None = None

    def to_json(self) -> dict[str, Any]:
        """Arms and tune only when set, so a study made before they existed is still the same study."""
        record = {"strategies": list(self.strategies), "seeds": list(self.seeds), "lambdas": list(self.lambdas),
                  "run-config": self.run_config, "strategy-config": self.strategy_config}
        if self.arms:
            record["arms"] = {name: {"strategy": a.strategy, **a.keys} for name, a in self.arms.items()}
        if self.tune is not None:
            record["tune"] = self.tune.to_json()
        return record


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
    for key in ("run-config", "strategy-config", "arms", "tune"):
        if key in data and not isinstance(data[key], dict):
            raise StudyError(f"--grid: {path}: '{key}' must be a table ([{key}])")
    for table in ("strategy-config", "arms"):
        for name, keys in data.get(table, {}).items():
            if not isinstance(keys, dict):
                raise StudyError(f"--grid: {path}: '{table}.{name}' must be a table of run-config keys")
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
    arms = parse_arms(data.get("arms", {}), strategies, f"{source}: arms")
    tune = parse_tune(data["tune"], strategies, f"{source}: tune") if "tune" in data else None
    if args.out is None and not isinstance(data.get("out", ""), str):
        raise StudyError(f"{source}: out must be a directory name, got {data['out']!r}")
    out = args.out if args.out is not None else (Path(data["out"]) if data.get("out") else None)
    if out is None:
        raise StudyError("--out: the study directory is required (or 'out' in the grid file)")
    return Grid(strategies, seeds, lambdas, common, per_strategy, arms, tune), out.expanduser().resolve()


def _arm_name(name: str, where: str) -> None:
    if not ARM_NAME.fullmatch(name) or name.split("=")[0] in RESERVED_ARMS:
        raise StudyError(f"{where}: '{name}' is not an arm name: letters, digits, '.' and '-', starting with a letter, "
                         f"and not {', '.join(RESERVED_ARMS)}")


def parse_arms(tables: Mapping[str, Mapping[str, Any]], strategies: Sequence[str], where: str) -> dict[str, ExtraArm]:
    """[arms.<name>]: a strategy (valid, required) and at least one run-config key; arms of a strategy
    left out of the study are not part of it."""
    arms = {}
    for name, table in tables.items():
        here = f"{where}.{name}"
        _arm_name(name, here)
        strategy = table.get("strategy")
        if not isinstance(strategy, str) or strategy not in valid_strategies():
            raise StudyError(f"{here}: 'strategy' must name a strategy, got {strategy!r}; valid choices: "
                             f"{', '.join(valid_strategies())}")
        keys = check_keys({k: v for k, v in table.items() if k != "strategy"}, here)
        if not keys:
            raise StudyError(f"{here}: sets no run-config key, so it would repeat {strategy}'s own configuration")
        if strategy in strategies:
            arms[name] = ExtraArm(strategy, keys)
    return arms


def parse_tune(table: Mapping[str, Any], strategies: Sequence[str], where: str) -> Tune:
    """[tune]: run-config keys with lists of candidate values, `seeds` (default [0]) and `strategies`
    (default: every strategy of the study). A Fair-* strategy takes its base strategy's choice (at
    lambda = 0 it is that strategy), so its base must be tuned too."""
    values = {}
    for key, given in table.items():
        if key in TUNE_OWN:
            continue
        if not isinstance(given, list) or not given:
            raise StudyError(f"{where}: '{key}' must be a non-empty list of candidate values, got {given!r}")
        literals = tuple(check_keys({key: v}, where)[key] for v in given)
        if len(set(literals)) != len(literals):
            raise StudyError(f"{where}: '{key}' lists a value twice: {given}")
        values[key] = literals
    if not values:
        raise StudyError(f"{where}: no run-config key to tune; give lists such as lr = [0.01, 0.05]")
    seeds = parse_seeds(table.get("seeds", list(DEFAULT_TUNE_SEEDS)), f"{where}: seeds")
    tuned = parse_strategies(table.get("strategies", list(strategies)), f"{where}: strategies")
    tuned = tuple(s for s in tuned if s in strategies)
    for strategy in tuned:
        base = FAIR_BASES.get(strategy)
        if base is not None and base not in tuned:
            raise StudyError(f"{where}: strategies: {strategy} takes the setting chosen for {base} (the same "
                             f"strategy at lambda = 0), so {base} must be tuned too")
    return Tune(values, seeds, tuned)


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


def configurations(grid: Grid, strategy: str, chosen: Mapping[str, Mapping[str, str]] | None = None
                   ) -> list[tuple[str, dict[str, str], dict[str, str]]]:
    """(label, weight keys, arm keys) of each configuration of a strategy: its paper settings (one per
    weight for Fair-*), then its extra arms, then "tuned" once `chosen` holds its setting."""
    weights = [(f"lambda={w:g}", {LAMBDA_KEY: repr(w)}) for w in grid.lambdas] if takes_lambda(strategy) else [("", {})]
    arms = [(name, arm.keys) for name, arm in grid.arms.items() if arm.strategy == strategy]
    if chosen is not None and strategy in chosen:
        arms.append((TUNED, dict(chosen[strategy])))
    found = [(label or PAPER, weight, {}) for label, weight in weights]
    for name, keys in arms:
        found += [(f"{name} {label}" if label else name, weight, keys) for label, weight in weights]
    return found


def pin_preset(keys: dict[str, str]) -> dict[str, str]:
    """`keys` with their preset spelt out when the preset would silently replace one of them.

    A preset fills every key left at pyproject's default (fl_app.config.with_preset), so an explicit
    default (lr 0.001 for IFCA under preset paper) would be lost; here the preset's values are given
    as keys instead and the preset is dropped, so every key means what it says. Other runs are unchanged.
    """
    name = json.loads(keys.get("preset", '""'))
    if not name or name not in PRESETS:
        return keys
    fills = preset_values(name, json.loads(keys["strategy"]))
    defaults = config_keys()
    given = parse_run_config(" ".join(f"{k}={v}" for k, v in keys.items()))
    lost = [k for k, v in fills.items() if k in given and given[k] == defaults[k] != v]
    if not lost:
        return keys
    spelt = {k: literal(v, k) for k, v in PRESETS[name].items() if k not in keys}
    return {**{k: v for k, v in keys.items() if k != "preset"}, **spelt}


def run_name(strategy: str, label: str, seed: int) -> str:
    return "_".join(p for p in (_slug(strategy), _slug(label.replace(" ", "-")) if label != PAPER else "",
                                f"seed{seed}") if p)


def plan(grid: Grid, chosen: Mapping[str, Mapping[str, str]] | None = None) -> list[PlannedRun]:
    """Every run, seed by seed, so that early seeds give complete comparisons first; the tuned arms only
    with `chosen` (strategy -> its setting chosen on validation).

    Keys in order of precedence, later winning: study settings, the weight, common, per-strategy keys,
    the arm's keys. A tuned run with the same keys as another run of its strategy and seed (the paper
    arm's, or an extra arm's such as the control) is that run: same keys, same seed, same bytes.
    """
    runs = []
    for seed in grid.seeds:
        for strategy in grid.strategies:
            named = {}
            for label, weight, arm in configurations(grid, strategy, chosen):
                keys = pin_preset({"strategy": json.dumps(strategy), **study_settings(strategy), **weight,
                                   **grid.run_config, **grid.strategy_config.get(strategy, {}), **arm,
                                   "seed": str(seed)})
                name = run_name(strategy, label, seed)
                if label.split(" ")[0] == TUNED:
                    name = named.get(json.dumps(keys, sort_keys=True), name)
                else:
                    named.setdefault(json.dumps(keys, sort_keys=True), name)
                runs.append(PlannedRun(strategy, label, seed, name, keys))
    return runs


def unique_runs(runs: Sequence[PlannedRun]) -> list[PlannedRun]:
    """The runs to train: one per run directory (a tuned arm equal to another arm shares its runs)."""
    seen: dict[str, PlannedRun] = {}
    for run in runs:
        seen.setdefault(run.run_dir, run)
    return list(seen.values())


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
