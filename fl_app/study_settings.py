"""Print a strategy's study hyperparameters as a `--run-config` string (for run.sh compare).

`python -m fl_app.study_settings NAME [--lambda X] [KEY=VALUE ...]`: the registry's study
settings for NAME, with the given keys replacing or adding to them; `--lambda` is applied only
when NAME owns the `lambda` key (the Fair-* strategies), so run.sh needs no list of them. Exit 2
naming the valid strategies.
"""

from __future__ import annotations

import json
import sys

from core.settings import ConfigError
from strategies.registry import own_keys, spec_for, study_settings

USAGE = "usage: python -m fl_app.study_settings NAME [--lambda X] [KEY=VALUE ...]"


def main(argv: list[str]) -> int:
    if not argv:
        print(USAGE, file=sys.stderr)
        return 2
    name, rest = argv[0], list(argv[1:])
    try:
        spec = spec_for(name)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    weight: list[str] = []
    if "--lambda" in rest:
        at = rest.index("--lambda")
        if at + 1 >= len(rest):
            print(USAGE, file=sys.stderr)
            return 2
        value = rest[at + 1]
        del rest[at:at + 2]
        weight = [f"lambda={value}"] if "lambda" in own_keys(spec) else []
    typed = {k: json.dumps(v) for k, v in study_settings(name).items()}  # run-config (TOML) literals
    settings = {**typed, **dict(pair.split("=", 1) for pair in [*weight, *rest])}
    print(" ".join(f"{k}={v}" for k, v in settings.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
