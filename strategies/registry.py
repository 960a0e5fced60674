"""The one list of strategies. Config validation, the ServerApp, the ClientApp's handlers,
`run.sh compare`'s study settings and docs/strategies.md's table all follow from it.

Adding a strategy: one module declaring a `StrategySpec`, and one line here (the README's
"Adding a strategy" lists the other files it touches).
"""

from __future__ import annotations

from typing import Any, get_type_hints

from core.settings import ConfigError, keys_of
from strategies import centralized, ditto, fedavg, flhc, flower, ifca, local, perfedavg
from strategies.algorithm import Handler, StrategySpec

SPECS: tuple[StrategySpec, ...] = (
    fedavg.SPEC,
    perfedavg.SPEC,
    ifca.SPEC,
    ifca.FAIR_SPEC,
    flhc.SPEC,
    flhc.FAIR_SPEC,
    centralized.SPEC,
    local.SPEC,
    ditto.SPEC,
)
STRATEGIES: dict[str, StrategySpec] = {spec.name: spec for spec in SPECS}
FLOWER_TEMPLATE = flower.flower_spec(f"{flower.PREFIX}<Name>")  # one spec per built-in name


def spec_for(name: str) -> StrategySpec:
    """The spec of a strategy name: a registered one, or `flwr:<Name>` for Flower's built-ins."""
    if name.startswith(flower.PREFIX):
        flower.validate_name(name)
        return flower.flower_spec(name)
    if name not in STRATEGIES:
        raise ConfigError(
            f"unknown strategy '{name}'; valid choices: {', '.join(STRATEGIES)}, or one of {', '.join(flower.NAMES)}"
        )
    return STRATEGIES[name]


def strategy_keys() -> dict[str, tuple[Any, Any, tuple[str, ...]]]:
    """Every strategy-owned config key: its default, its type, and the strategies that use it.

    A key several strategies declare must have one default and type (checked here)."""
    out: dict[str, tuple[Any, Any, tuple[str, ...]]] = {}
    for spec in (*SPECS, FLOWER_TEMPLATE):
        if spec.settings is None:
            continue
        hints = get_type_hints(spec.settings)
        for key, field in keys_of(spec.settings).items():
            default, kind = getattr(spec.settings(), field.name), hints[field.name]
            if key in out and out[key][:2] != (default, kind):
                raise ValueError(f"config key '{key}' is declared twice differently ({spec.name})")
            out[key] = (default, kind, (*out.get(key, (None, None, ()))[2], spec.name))
    return out


def client_handlers() -> dict[str, Handler]:
    """Message type -> client handler over all strategies; one message type, one handler."""
    table: dict[str, Handler] = {}
    for spec in SPECS:
        for message_type, handler in spec.handlers.items():
            if table.setdefault(message_type, handler) is not handler:
                raise ValueError(f"message type '{message_type}' has two client handlers ({spec.name})")
    return table


def study_settings(name: str) -> dict[str, Any]:
    """The study's hyperparameters for a strategy (the paper's: docs/strategies.md)."""
    return dict(spec_for(name).study)


def own_keys(spec: StrategySpec) -> tuple[str, ...]:
    return tuple(keys_of(spec.settings)) if spec.settings else ()
