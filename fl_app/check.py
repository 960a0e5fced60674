"""Validate a run before `flwr run` starts anything: `python -m fl_app.check [--run-config ...]`.

Fuses pyproject defaults with the overrides exactly as Flower does, runs every check the
ServerApp would run, and prints (as one JSON line) what run.sh needs: the number of
SuperNodes (states x clients-per-state), the data for its banner, and overrides that pin paths to absolute ones and
the data source to the resolved one; with `replicates`, every replicate is checked and
listed. Exit 2 with one message on bad config or data.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import click
from flwr.common.config import get_fused_config_from_dir, parse_config_args

from fl_app.setup import build_runs

PROJECT_DIR = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-config", action="append", default=[], help="as for flwr run")
    args = parser.parse_args(argv)
    try:
        raw = get_fused_config_from_dir(PROJECT_DIR, parse_config_args(args.run_config))
        for key in ("data-path", "data-dir", "resume", "replicates"):
            if raw.get(key):
                raw[key] = str(Path(str(raw[key])).expanduser().resolve())
        runs = build_runs(raw, datetime.now(UTC), Path.cwd())
    except (ValueError, OSError, click.ClickException) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    run = runs[0]
    results = str(run.writer.directory) if len(runs) == 1 and not raw.get("replicates") else ""
    pinned = {
        "data-source": run.source.kind,
        "data-path": run.source.path if run.source.kind == "sample" else raw.get("data-path", ""),
        "data-dir": raw.get("data-dir", ""),
        "results-dir": results,
        "resume": raw.get("resume", ""),
        "replicates": raw.get("replicates", ""),
    }
    overrides = " ".join(f"{k}={json.dumps(v)}" for k, v in pinned.items())
    num_clients = len(run.source.states) * run.config.clients_per_state
    data = f"{run.source.kind} ({run.source.label})"
    print(json.dumps({"num_clients": num_clients, "results_dir": results, "data": data, "overrides": overrides,
                      "replicates": [str(r.writer.directory) for r in runs]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
