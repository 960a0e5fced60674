"""Typed, validated settings from a flat run-config mapping: the rules every config key follows.

The common run keys (fl_app/config.py) and each strategy's own keys (declared in its module)
are frozen dataclasses; a field's type hint says how its value is read and its metadata may
give a key name other than the field's (`lambda` for `fair_lambda`). Errors name the key and
the valid choices.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Mapping, Sequence
from typing import Any, get_type_hints


class ConfigError(ValueError):
    """A run config value that cannot be used; the message names the key and valid choices."""


def key_of(field: dataclasses.Field) -> str:
    """A field's run-config key: metadata `key`, else the name with dashes."""
    return field.metadata.get("key", field.name.replace("_", "-"))


def keys_of(settings_type: type) -> dict[str, dataclasses.Field]:
    return {key_of(f): f for f in dataclasses.fields(settings_type)}


def to_config_dict(settings: Any) -> dict[str, Any]:
    """Settings under their key names; tuples as the comma-separated strings they came from."""
    out = {}
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        out[key_of(field)] = ",".join(value) if isinstance(value, tuple) else value
    return out


def parse_settings(settings_type: type, raw: Mapping[str, Any]) -> Any:
    """The dataclass built from the keys of `raw` it declares (others ignored), types checked."""
    hints = get_type_hints(settings_type)
    values = {
        field.name: coerce(key, raw[key], hints[field.name])
        for key, field in keys_of(settings_type).items()
        if key in raw
    }
    return settings_type(**values)


def coerce(key: str, value: Any, kind: Any) -> Any:
    """`value` read as `kind` (str, int, float, or tuple[str, ...] from a comma-separated string)."""
    if kind == tuple[str, ...]:
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
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not _finite(value):
            raise ConfigError(f"config key '{key}' must be a finite number, got {value!r}")
        return float(value)
    raise TypeError(f"config key '{key}' has unsupported type {kind!r}")


def _finite(number: int | float) -> bool:
    return math.isfinite(number) if isinstance(number, float) else abs(number) <= sys.float_info.max


def choice(key: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ConfigError(f"unknown {key} '{value}'; valid choices: {', '.join(choices)}")


def at_least(key: str, value: float, low: float, strict: bool = False) -> None:
    if value < low or (strict and value == low):
        bound = f"> {low:g}" if strict else f">= {low:g}"
        raise ConfigError(f"config key '{key}' must be {bound}, got {value:g}")
