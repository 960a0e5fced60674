"""Started commands for the deployment and interrupt tests: output in files, waits on events.

Every wait polls for an event (a line in a log, a row in a results file, an exit) until a
generous deadline, never a fixed sleep; the deadlines are far above what a loaded 2-core
machine needs, so a test fails only when the event does not come.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
POLL_S = 0.05
STARTUP_S = 600.0  # until a federation answers or a round is logged
RUN_S = 1500.0  # until a started command exits


def default_sigint() -> None:
    """SIGINT as a terminal's foreground job has it. A suite started in the background by a
    non-interactive shell inherits SIGINT ignored, and bash can neither trap nor reset a signal
    ignored at its start, so run.sh's Ctrl-C handling would go untested."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Live:
    """A command started in its own session (so a test can Ctrl-C its whole process group),
    with stdout and stderr in files and a marker in its environment that every process it
    starts inherits."""

    def __init__(self, command: list[str], logs: Path, env: dict | None = None) -> None:
        logs.mkdir(parents=True, exist_ok=True)
        self.out_path, self.err_path = logs / "stdout", logs / "stderr"
        self.marker = uuid.uuid4().hex
        with self.out_path.open("wb") as out, self.err_path.open("wb") as err:
            self.proc = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                         start_new_session=True, preexec_fn=default_sigint,
                                         env={**os.environ, "FAIRFL_TEST_MARKER": self.marker, **(env or {})})

    @property
    def out(self) -> str:
        return self.out_path.read_text(errors="replace")

    @property
    def err(self) -> str:
        return self.err_path.read_text(errors="replace")

    def wait_for(self, pattern: str, stream: str = "err", timeout: float = STARTUP_S) -> re.Match:
        """The first match of `pattern` in stdout ("out") or stderr ("err"), once it appears."""
        deadline = time.monotonic() + timeout
        while True:
            found = re.search(pattern, self.out if stream == "out" else self.err, re.M)
            if found:
                return found
            if self.proc.poll() is not None:
                found = re.search(pattern, self.out if stream == "out" else self.err, re.M)
                if found:
                    return found
                raise AssertionError(f"exited {self.proc.returncode} before /{pattern}/ in {stream}\n{self.tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"no /{pattern}/ in {stream} after {timeout:.0f} s\n{self.tail()}")
            time.sleep(POLL_S)

    def wait_until(self, what: str, ready, timeout: float = STARTUP_S) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"exited {self.proc.returncode} before {what}\n{self.tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"not {what} after {timeout:.0f} s\n{self.tail()}")
            time.sleep(POLL_S)

    def signal(self, sig: int, group: bool = False) -> None:
        """`sig` to the command (to its whole process group with `group`, as a terminal's Ctrl-C)."""
        try:
            os.killpg(self.proc.pid, sig) if group else self.proc.send_signal(sig)
        except ProcessLookupError:
            pass

    def finish(self, timeout: float = RUN_S) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"did not exit within {timeout:.0f} s\n{self.tail()}") from None

    def stop(self) -> None:
        """After a failed wait: SIGTERM (the command tears its processes down), then what is left."""
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL, group=True)
        kill_marked(self.marker)

    def tail(self) -> str:
        return f"--- stdout\n{self.out[-3000:]}\n--- stderr\n{self.err[-5000:]}"


def deploy(*args: str, logs: Path) -> Live:
    return Live([sys.executable, "-m", "fl_app.deploy", *args], logs)


def run_sh(*args: str, logs: Path) -> Live:
    return Live(["bash", str(REPO / "run.sh"), *args], logs, env={"FAIRFL_VENV": sys.prefix})


def marked(marker: str) -> dict[int, str]:
    """pid -> command line of every live process whose environment carries the marker."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if f"FAIRFL_TEST_MARKER={marker}".encode() not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
    return found


def kill_marked(marker: str) -> None:
    """Cleanup after a failed test only: SIGKILL whatever still carries the marker."""
    deadline = time.monotonic() + 30
    while (left := marked(marker)) and time.monotonic() < deadline:
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(POLL_S)


def started_pids(stderr: str) -> set[int]:
    """Every pid a deploy reported: the SuperLink, the SuperNodes (restarts too) and all it stopped."""
    pids = {int(p) for p in re.findall(r": pid (\d+), port", stderr)}
    for line in re.findall(r"^stopped pids ([\d ]*\d)", stderr, re.M):
        pids |= {int(p) for p in line.split()}
    return pids


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def rounds_in(metrics: Path) -> set[int]:
    """The rounds metrics.csv holds rows of (empty while it does not exist)."""
    if not metrics.exists():
        return set()
    return {int(line.split(",", 1)[0]) for line in metrics.read_text().splitlines()[1:] if line}
