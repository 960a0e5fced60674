"""Print a Flower run's final status (`flwr run --stream` exits 0 even when the run failed).

`python -m fl_app.run_status RUN_ID` polls `flwr ls` until the run has finished and prints
its status, e.g. `finished:completed` or `finished:failed`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

POLL_S = 2.0


def run_status(run_id: str, timeout_s: float = 600.0) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        out = subprocess.run(
            ["flwr", "ls", "--run-id", run_id, "--format", "json"], capture_output=True, text=True, check=False
        )
        status = parse_status(out.stdout)
        if status.startswith("finished") or time.monotonic() > deadline:
            return status
        time.sleep(POLL_S)


def parse_status(stdout: str) -> str:
    """The status in `flwr ls --run-id ID --format json`'s output (`unknown` if unreadable)."""
    try:
        runs = json.loads(stdout).get("runs", [])
    except json.JSONDecodeError:
        return "unknown"
    return str(runs[0].get("status", "unknown")) if runs else "unknown"


if __name__ == "__main__":
    print(run_status(sys.argv[1]))
