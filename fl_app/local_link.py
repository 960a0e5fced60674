"""Wait for the local SuperLink that `./run.sh run` starts before its pre-flight check.

`flwr run` starts a local SuperLink itself when none answers on its port, and waits for it
(flwr 1.42, `cli/local_superlink.py`: about 5 s here, after the check). `./run.sh run` starts the
same process, with the same flags, first, so it comes up while the check and the app copy
(fl_app/app_copy.py) run; then `flwr run` finds it answering and uses it. This waits until it
answers on Flower's health endpoint, and fails at once if the process has died.

`python -m fl_app.local_link wait PORT PID [--timeout S]`: exit 0 when it answers, 1 otherwise,
with a message naming the log file.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import urllib.error
import urllib.request

PROBE_S = 0.05
DEFAULT_TIMEOUT_S = 60.0


def answers(port: int) -> bool:
    """Whether the SuperLink on `port` answers on its health endpoint."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=0.4) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError):
        return False


def alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie does not)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait(port: int, pid: int, timeout_s: float = DEFAULT_TIMEOUT_S) -> str | None:
    """None once the SuperLink answers; else why not (its process ended, or `timeout_s` passed)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if answers(port):
            return None
        if not alive(pid):
            return f"the local SuperLink (pid {pid}) exited before it answered on port {port}"
        time.sleep(PROBE_S)
    return f"the local SuperLink (pid {pid}) did not answer on port {port} within {timeout_s:.0f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["wait"])
    parser.add_argument("port", type=int)
    parser.add_argument("pid", type=int)
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S)
    parser.add_argument("--log", default="", help="its log file, named in the message when it fails")
    args = parser.parse_args()
    problem = wait(args.port, args.pid, args.timeout)
    if problem:
        print(f"{problem}; see {args.log or os.environ.get('FLWR_HOME', '')}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
