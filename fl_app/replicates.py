"""The `replicates` config key: many (strategy, settings, seed) replicates in one federation.

`replicates` names a JSON file holding a list of run-config tables, one per replicate. Each
replicate's config is the federation's run config with its table on top, and must give its own
absolute `results-dir` (and may give `resume`). What the federation's nodes share cannot differ
between replicates, so a table may not set those keys (`FEDERATION_KEYS`): set them on the
federation's run config. Without `replicates` the run is a federation of one replicate.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from core.settings import ConfigError

REPLICATES_KEY = "replicates"
FEDERATION_KEYS = ("data-source", "data-path", "data-dir", "states", "clients-per-state", "round-timeout",
                   "node-states", REPLICATES_KEY)
SERVER_KEYS = ("results-dir", "resume", REPLICATES_KEY)  # what no client needs to know


def replicate_configs(raw: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each replicate's raw run config, in the file's order (one: the run itself)."""
    path = str(raw.get(REPLICATES_KEY, ""))
    if not path:
        return [dict(raw)]
    for key in ("results-dir", "resume"):
        if raw.get(key):
            raise ConfigError(f"config key '{key}' is set per replicate when 'replicates' is given; "
                              f"remove it from the run config and put it in {path}")
    try:
        tables = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"config key 'replicates': cannot read a JSON list from '{path}': {err}") from None
    if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
        raise ConfigError(f"config key 'replicates': '{path}' must hold a non-empty list of run-config tables")
    configs, dirs = [], {}
    for i, table in enumerate(tables):
        where = f"replicate {i} of '{path}'"
        shared = sorted(set(table) & set(FEDERATION_KEYS))
        if shared:
            raise ConfigError(f"{where} sets {', '.join(shared)}, which every replicate of a federation shares; "
                              "set them on the run config")
        bad = sorted(k for k, v in table.items() if not isinstance(v, (str, int, float, bool)))
        if bad:
            raise ConfigError(f"{where}: key(s) {', '.join(bad)} must be strings, numbers or booleans")
        results = str(table.get("results-dir", ""))
        if not Path(results).is_absolute():
            raise ConfigError(f"{where} must give an absolute 'results-dir', got '{results}'")
        if results in dirs:
            raise ConfigError(f"replicates {dirs[results]} and {i} of '{path}' share results-dir '{results}'")
        dirs[results] = i
        configs.append({**raw, **table, REPLICATES_KEY: ""})
    return configs


def client_keys(federation: Mapping[str, Any], replicate: Mapping[str, Any]) -> dict[str, Any]:
    """The run-config keys a replicate's clients need on top of the federation's run config."""
    return {k: v for k, v in replicate.items() if k not in SERVER_KEYS and federation.get(k) != v}
