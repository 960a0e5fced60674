"""The run config: `[tool.flwr.app.config]` parsed and validated once into a typed object.

Everything downstream receives a `RunConfig`, never the raw dict, so a bad key or value is
reported once, before any data is read or any results directory is created. The common
keys are the fields below; each strategy declares its own keys in its module (its spec's
`settings`), and `RunConfig.params` holds them. A key that belongs to other strategies must
keep its default: setting it would silently do nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from clients.sources import SOURCE_KINDS as DATA_SOURCES
from core.settings import ConfigError, at_least, choice, coerce, keys_of, parse_settings, to_config_dict
from core.states import FOLKTABLES_STATES
from core.tasks import ENCODINGS, TASKS
from strategies.registry import spec_for, strategy_keys

FAIL_MODES = ("train-error", "evaluate-error", "nan-update", "shape-update", "keys-update", "hang")
# Keys a resume may change: how long, and the operational rules that say when to wait or stop.
RESUME_MAY_CHANGE = ("num-server-rounds", "resume", "results-dir", "round-timeout", "max-failed-rounds", "node-states",
                     "replicates")
# What a preset sets, besides each strategy's study settings (docs/configuration.md "Presets").
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"encoding": "paper", "train-rows": 1000, "test-rows": 2000, "val-rows": 2000},
}


@dataclass(frozen=True)
class RunConfig:
    """Resolved, validated run settings (docs/configuration.md gives the meaning of each key)."""

    task: str = "income"
    strategy: str = "fedavg"
    data_source: str = "auto"
    data_path: str = ""
    data_dir: str = ""
    states: tuple[str, ...] = ()
    clients_per_state: int = 1
    num_server_rounds: int = 20
    stop_patience: int = 0
    stop_min_delta: float = 0.0
    local_epochs: int = 10
    lr: float = 0.001
    batch_size: int = 32
    seed: int = 0
    results_dir: str = ""
    synthetic_rows: int = 0
    synthetic_reversed: tuple[str, ...] = ()
    encoding: str = "grouped"
    train_rows: int = 0
    test_rows: int = 0
    val_rows: int = 0
    preset: str = ""
    resume: str = ""
    fail_states: tuple[str, ...] = ()
    fail_prob: float = 0.0
    fail_mode: str = "train-error"
    min_clients: float = 1.0
    max_failed_rounds: int = 3
    round_timeout: float = 600.0
    node_states: str = ""
    replicates: str = ""
    eval_every: int = 1
    params: Any = None  # the strategy's own settings: its spec's `settings` dataclass

    def min_updates(self, num_clients: int) -> int:
        """`min-clients` as a number of clients: values below 1 are a fraction of `num_clients`, rounded up."""
        if self.min_clients < 1:
            return max(1, math.ceil(self.min_clients * num_clients - 1e-9))
        return int(self.min_clients)

    def bindings(self) -> dict[int, str]:
        """`node-states` as node id -> state code."""
        return parse_node_states(self.node_states)

    def to_dict(self) -> dict[str, Any]:
        """The config under its run-config key names (for config.json): common, then the strategy's."""
        common = {k: v for k, v in to_config_dict(self).items() if k in COMMON_KEYS}
        return {**common, **(to_config_dict(self.params) if self.params is not None else {})}


COMMON_KEYS = {k: f for k, f in keys_of(RunConfig).items() if f.name != "params"}


def config_keys() -> dict[str, Any]:
    """Every valid run-config key and its default: the common keys (`RunConfig`), then each
    strategy's own (its settings). The one answer to "which keys are there": the config check,
    presets, resume, the study's key check and the docs test all ask it, and pyproject's
    [tool.flwr.app.config] must hold exactly these keys and defaults (tests/test_config.py)."""
    return {**RunConfig().to_dict(), **{k: default for k, (default, _, _) in strategy_keys().items()}}


def parse_config(raw: Mapping[str, Any]) -> RunConfig:
    """Validate a run-config mapping (Flower's `context.run_config`) into a `RunConfig`."""
    valid = config_keys()
    unknown = sorted(set(raw) - set(valid))
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(unknown)}; valid keys: {', '.join(valid)}")
    raw = with_preset(raw)
    common = {k: v for k, v in raw.items() if k in COMMON_KEYS}
    config = parse_settings(RunConfig, common)
    spec = spec_for(config.strategy)
    own = set(keys_of(spec.settings)) if spec.settings else set()
    for key, (default, kind, users) in strategy_keys().items():
        if key in raw and key not in own and coerce(key, raw[key], kind) != default:
            raise ConfigError(
                f"config key '{key}' belongs to strategy {', '.join(users)}, not '{config.strategy}' "
                f"(keys of '{config.strategy}': {', '.join(sorted(own)) or 'none'})"
            )
    params = parse_settings(spec.settings, raw) if spec.settings else None
    config = replace(config, params=params)
    _validate_common(config)
    if params is not None:
        params.validate(config)
    return config


def preset_values(name: str, strategy: Any) -> dict[str, Any]:
    """What preset `name` sets for `strategy`: its own keys, then the strategy's study settings."""
    return {**PRESETS[name], **(spec_for(strategy).study if isinstance(strategy, str) else {})}


def with_preset(raw: Mapping[str, Any]) -> dict[str, Any]:
    """`raw` with its preset's values for every key it leaves at the default.

    Flower hands the app the run config fused with pyproject's defaults, so a key given
    explicitly with its default value cannot be told from one not given: both take the preset's.
    """
    name = raw.get("preset", "")
    if not isinstance(name, str):
        raise ConfigError(f"config key 'preset' must be a string, got {name!r}")
    if not name:
        return dict(raw)
    choice("preset", name, ["", *PRESETS])
    values = preset_values(name, raw.get("strategy", RunConfig.strategy))
    defaults = config_keys()
    return {**raw, **{k: v for k, v in values.items() if raw.get(k, defaults[k]) == defaults[k]}}


def _validate_common(config: RunConfig) -> None:
    choice("task", config.task, list(TASKS))
    choice("encoding", config.encoding, list(ENCODINGS))
    for key in ("train-rows", "test-rows", "val-rows"):
        at_least(key, getattr(config, key.replace("-", "_")), 0)
    rows = (config.train_rows, config.test_rows, config.val_rows)
    if any(rows) and not (config.train_rows and config.test_rows):
        raise ConfigError(
            f"config keys 'train-rows' ({config.train_rows}) and 'test-rows' ({config.test_rows}) must both be > 0 "
            "when a partition is given; all three 0 means the 80/20 split without validation"
        )
    choice("data-source", config.data_source, DATA_SOURCES)
    choice("fail-mode", config.fail_mode, FAIL_MODES)
    at_least("clients-per-state", config.clients_per_state, 1)
    at_least("num-server-rounds", config.num_server_rounds, 1)
    at_least("stop-patience", config.stop_patience, 0)
    at_least("stop-min-delta", config.stop_min_delta, 0.0)  # finite: parse_settings refuses NaN and inf
    if config.stop_patience > 0 and config.val_rows == 0:
        raise ConfigError(
            f"config key 'stop-patience' ({config.stop_patience}) stops on the pooled validation loss, and the run "
            "has no validation split: set 'val-rows' > 0 (with 'train-rows' and 'test-rows'), or preset 'paper'"
        )
    at_least("local-epochs", config.local_epochs, 1)
    at_least("batch-size", config.batch_size, 1)
    at_least("lr", config.lr, 0.0, strict=True)
    at_least("seed", config.seed, 0)
    at_least("synthetic-rows", config.synthetic_rows, 0)
    at_least("fail-prob", config.fail_prob, 0.0)
    if config.min_clients <= 0 or (config.min_clients >= 1 and not float(config.min_clients).is_integer()):
        raise ConfigError(
            f"config key 'min-clients' must be a whole number of clients >= 1 or a fraction in (0, 1), "
            f"got {config.min_clients:g}"
        )
    at_least("max-failed-rounds", config.max_failed_rounds, 1)
    at_least("eval-every", config.eval_every, 1)
    at_least("round-timeout", config.round_timeout, 0.0, strict=True)
    bindings = config.bindings()
    unknown = sorted({s for s in bindings.values() if s not in FOLKTABLES_STATES})
    if unknown:
        raise ConfigError(
            f"config key 'node-states' binds nodes to unknown state code(s) {', '.join(unknown)}; "
            f"valid: {', '.join(FOLKTABLES_STATES)}"
        )
    if config.fail_prob > 1.0:
        raise ConfigError(f"config key 'fail-prob' must be <= 1, got {config.fail_prob:g}")
    if config.resume and not Path(config.resume).is_absolute():
        raise ConfigError(
            f"config key 'resume' must be an absolute path (flwr run resolves relative paths against "
            f"its copy of the app), got '{config.resume}'"
        )
    if config.data_source == "table" and not config.data_path:
        raise ConfigError("data-source 'table' needs config key 'data-path' (a parquet or CSV file)")
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


def parse_node_states(text: str) -> dict[int, str]:
    """"123=CA,456=WY" -> {123: "CA", 456: "WY"}: SuperNode ids (as `flwr supernode register`
    printed them) bound to the state whose client they may serve."""
    bindings: dict[int, str] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        node, sep, state = (s.strip() for s in item.partition("="))
        if not sep or not node.isdigit() or not state or int(node) >= 2**64:
            raise ConfigError(
                f"config key 'node-states' must list NODE_ID=STATE pairs separated by commas "
                f"(e.g. \"123456=CA,789=WY\"), got '{item}'"
            )
        if int(node) in bindings:
            raise ConfigError(f"config key 'node-states' binds node {node} twice")
        bindings[int(node)] = state.upper()
    return bindings


def resume_conflicts(checkpointed: Mapping[str, Any], requested: Mapping[str, Any]) -> list[str]:
    """Keys whose value differs from the checkpointed run's, except those a resume may change.

    A key the checkpointed run's config lacks (it predates the key) had its default value."""
    defaults = config_keys()
    before = {**defaults, **checkpointed}
    now = {**defaults, **requested}
    keys = (set(checkpointed) | set(requested)) - set(RESUME_MAY_CHANGE)
    return sorted(k for k in keys if before.get(k) != now.get(k))


def absolute_results_dir(config: RunConfig, timestamp: str, base: Path, data_kind: str) -> Path:
    """The run's results directory: `results-dir` if set, else `results/<ts>-<strategy>-<task>`,
    with `-synthetic` appended on synthetic data (`data_kind`, the resolved source), so a
    directory listing never passes a synthetic run off as one on census records."""
    name = config.strategy.replace(":", "-")
    synthetic = "-synthetic" if data_kind == "synthetic" else ""
    chosen = Path(config.results_dir) if config.results_dir else (
        Path("results") / f"{timestamp}-{name}-{config.task}{synthetic}"
    )
    return chosen if chosen.is_absolute() else (base / chosen).resolve()
