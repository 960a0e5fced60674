"""The run config: `[tool.flwr.app.config]` parsed and validated once into a typed object.

Everything downstream receives a `RunConfig`, never the raw dict, so a bad key or value is
reported once, before any data is read or any results directory is created.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from clients.sources import FOLKTABLES_STATES
from clients.tasks import ATTRIBUTES, TASKS

STRATEGIES = ("fedavg", "perfedavg", "ifca", "fair-ifca")
DATA_SOURCES = ("auto", "table", "folktables", "synthetic")
FAIR_METRICS = ("sp", "eo", "eodds")
MAML_VARIANTS = ("first-order", "hessian-free")
FAIL_MODES = ("train-error", "evaluate-error", "nan-update", "shape-update", "keys-update")
RESUME_MAY_CHANGE = ("num-server-rounds", "resume", "results-dir")


class ConfigError(ValueError):
    """A run config value that cannot be used; the message names the key and valid choices."""


@dataclass(frozen=True)
class RunConfig:
    """Resolved, validated run settings (see README for the meaning of each key)."""

    task: str = "income"
    strategy: str = "fedavg"
    data_source: str = "auto"
    data_path: str = ""
    data_dir: str = ""
    states: tuple[str, ...] = ()
    clients_per_state: int = 1
    num_server_rounds: int = 20
    local_epochs: int = 10
    lr: float = 0.001
    batch_size: int = 32
    seed: int = 0
    results_dir: str = ""
    synthetic_rows: int = 0
    synthetic_reversed: tuple[str, ...] = ()
    k: int = 2
    warmup_rounds: int = 0
    adapt_steps: int = 5
    maml_variant: str = "first-order"
    meta_lr: float = 0.001
    fair_lambda: float = 0.0
    fair_attribute: str = "sex"
    fair_metric: str = "sp"
    resume: str = ""
    fail_states: tuple[str, ...] = ()
    fail_prob: float = 0.0
    fail_mode: str = "train-error"

    def to_dict(self) -> dict[str, Any]:
        """The config under its run-config key names (for config.json and messages)."""
        out = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            out[_key(field.name)] = ",".join(value) if isinstance(value, tuple) else value
        return out


def _key(field_name: str) -> str:
    return "lambda" if field_name == "fair_lambda" else field_name.replace("_", "-")


_FIELDS = {_key(f.name): f for f in dataclasses.fields(RunConfig)}


def _coerce(key: str, value: Any, kind: type) -> Any:
    if kind is tuple:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}' must be a comma-separated string, got {value!r}")
        return tuple(s.strip().upper() for s in value.split(",") if s.strip())
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}' must be a string, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int) and not (
            isinstance(value, float) and value.is_integer()
        ):
            raise ConfigError(f"config key '{key}' must be an integer, got {value!r}")
        if not -(2**63) <= value < 2**63:
            raise ConfigError(f"config key '{key}' must be a 64-bit integer, got {value!r}")
        return int(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not _finite(value):
        raise ConfigError(f"config key '{key}' must be a finite number, got {value!r}")
    return float(value)


def _finite(number: int | float) -> bool:
    return math.isfinite(number) if isinstance(number, float) else abs(number) <= sys.float_info.max


def _choice(key: str, value: str, choices: tuple[str, ...] | list[str]) -> None:
    if value not in choices:
        raise ConfigError(f"unknown {key} '{value}'; valid choices: {', '.join(choices)}")


def _at_least(key: str, value: float, low: float, strict: bool = False) -> None:
    if value < low or (strict and value == low):
        bound = f"> {low:g}" if strict else f">= {low:g}"
        raise ConfigError(f"config key '{key}' must be {bound}, got {value:g}")


def parse_config(raw: Mapping[str, Any]) -> RunConfig:
    """Validate a run-config mapping (Flower's `context.run_config`) into a `RunConfig`."""
    unknown = sorted(set(raw) - set(_FIELDS))
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {', '.join(unknown)}; valid keys: {', '.join(_FIELDS)}"
        )
    types = {"tuple[str, ...]": tuple, "str": str, "int": int, "float": float}
    values = {
        f.name: _coerce(key, raw[key], types[str(f.type)])
        for key, f in _FIELDS.items()
        if key in raw
    }
    config = RunConfig(**values)
    _choice("task", config.task, list(TASKS))
    _choice("strategy", config.strategy, STRATEGIES)
    _choice("data-source", config.data_source, DATA_SOURCES)
    _choice("fair-attribute", config.fair_attribute, list(ATTRIBUTES))
    _choice("fair-metric", config.fair_metric, FAIR_METRICS)
    _choice("maml-variant", config.maml_variant, MAML_VARIANTS)
    _choice("fail-mode", config.fail_mode, FAIL_MODES)
    _at_least("clients-per-state", config.clients_per_state, 1)
    _at_least("num-server-rounds", config.num_server_rounds, 1)
    _at_least("local-epochs", config.local_epochs, 1)
    _at_least("batch-size", config.batch_size, 1)
    _at_least("lr", config.lr, 0.0, strict=True)
    _at_least("meta-lr", config.meta_lr, 0.0, strict=True)
    _at_least("seed", config.seed, 0)
    _at_least("synthetic-rows", config.synthetic_rows, 0)
    _at_least("k", config.k, 1)
    _at_least("warmup-rounds", config.warmup_rounds, 0)
    _at_least("adapt-steps", config.adapt_steps, 0)
    _at_least("lambda", config.fair_lambda, 0.0)
    _at_least("fail-prob", config.fail_prob, 0.0)
    if config.fail_prob > 1.0:
        raise ConfigError(f"config key 'fail-prob' must be <= 1, got {config.fail_prob:g}")
    if config.resume and not Path(config.resume).is_absolute():
        raise ConfigError(
            f"config key 'resume' must be an absolute path (flwr run resolves relative paths against "
            f"its copy of the app), got '{config.resume}'"
        )
    if config.warmup_rounds >= config.num_server_rounds and config.strategy in ("ifca", "fair-ifca"):
        raise ConfigError(
            f"config key 'warmup-rounds' ({config.warmup_rounds}) must be smaller than "
            f"'num-server-rounds' ({config.num_server_rounds})"
        )
    if config.data_source == "table" and not config.data_path:
        raise ConfigError("data-source 'table' needs config key 'data-path' (a parquet or CSV file)")
    if config.strategy == "ifca" and config.fair_lambda != 0.0:
        raise ConfigError("config key 'lambda' applies to strategy 'fair-ifca'; 'ifca' is lambda = 0")
    for key, listed in (
        ("states", config.states), ("synthetic-reversed", config.synthetic_reversed), ("fail-states", config.fail_states)
    ):
        unknown = [s for s in listed if s not in FOLKTABLES_STATES]
        if unknown:
            raise ConfigError(
                f"config key '{key}' has unknown state code(s) {', '.join(unknown)}; "
                f"valid: {', '.join(FOLKTABLES_STATES)}"
            )
        if len(set(listed)) != len(listed):
            raise ConfigError(f"config key '{key}' lists a state twice: {','.join(listed)}")
    return config


def resume_conflicts(checkpointed: Mapping[str, Any], requested: Mapping[str, Any]) -> list[str]:
    """Keys whose value differs from the checkpointed run's, except those a resume may change.

    A key the checkpointed run's config lacks (it predates the key) had its default value."""
    checkpointed = {**RunConfig().to_dict(), **checkpointed}
    keys = (set(checkpointed) | set(requested)) - set(RESUME_MAY_CHANGE)
    return sorted(k for k in keys if checkpointed.get(k) != requested.get(k))


def absolute_results_dir(config: RunConfig, timestamp: str, base: Path) -> Path:
    """The run's results directory: `results-dir` if set, else `results/<ts>-<strategy>-<task>`."""
    chosen = Path(config.results_dir) if config.results_dir else (
        Path("results") / f"{timestamp}-{config.strategy}-{config.task}"
    )
    return chosen if chosen.is_absolute() else (base / chosen).resolve()
