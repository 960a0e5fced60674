"""Validate a run before `flwr run` starts anything: `python -m fl_app.check [--run-config ...]`.

Fuses pyproject defaults with the overrides exactly as Flower does, runs every check the
ServerApp would run, and prints (as one JSON line) what run.sh needs: the number of
SuperNodes (states x clients-per-state), the data for its banner, and overrides that pin
paths to absolute ones and the data source to the resolved one. Exit 2 with one message on
bad config or data.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

import click
from flwr.common.config import get_fused_config_from_dir, parse_config_args

from fl_app.setup import build_run

PROJECT_DIR = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-config", action="append", default=[], help="as for flwr run")
    args = parser.parse_args(argv)
    try:
        raw = get_fused_config_from_dir(PROJECT_DIR, parse_config_args(args.run_config))
        for key in ("data-path", "data-dir", "resume"):
            if raw.get(key):
                raw[key] = str(Path(str(raw[key])).expanduser().resolve())
        run = build_run(raw, datetime.now(timezone.utc), Path.cwd())
    except (ValueError, OSError, click.ClickException) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    pinned = {
        "data-source": run.source.kind,
        "data-path": run.source.path if run.source.kind == "sample" else raw.get("data-path", ""),
        "data-dir": raw.get("data-dir", ""),
        "results-dir": str(run.writer.directory),
        "resume": raw.get("resume", ""),
    }
    overrides = " ".join(f"{k}={json.dumps(v)}" for k, v in pinned.items())
    num_clients = len(run.source.states) * run.config.clients_per_state
    data = f"{run.source.kind} ({run.source.label})"
    print(json.dumps({"num_clients": num_clients, "results_dir": str(run.writer.directory), "data": data,
                      "overrides": overrides}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
