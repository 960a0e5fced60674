"""Print a strategy's study hyperparameters as a `--run-config` string (for run.sh compare).

`python -m fl_app.study_settings NAME [KEY=VALUE ...]`: the registry's study settings for
NAME, with the given keys replacing or adding to them; exit 2 naming the valid strategies.
"""

from __future__ import annotations

import json
import sys

from core.settings import ConfigError
from strategies.registry import spec_for, study_settings


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m fl_app.study_settings NAME [KEY=VALUE ...]", file=sys.stderr)
        return 2
    name, pairs = argv[0], argv[1:]
    try:
        spec_for(name)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    typed = {k: json.dumps(v) for k, v in study_settings(name).items()}  # run-config (TOML) literals
    settings = {**typed, **dict(pair.split("=", 1) for pair in pairs)}
    print(" ".join(f"{k}={v}" for k, v in settings.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
