"""Stop process trees by pid: what `./run.sh` and `python -m fl_app.deploy` started, and all those started.

`python -m fl_app.processes stop [--match TEXT] [--env NAME=VALUE] [PID ...]` stops each PID
(and every process whose command line contains TEXT, e.g. a temp FLWR_HOME path, or whose
environment has the variable NAME=VALUE) with everything below it: its descendants, and the
members of its process group and session, which keeps what a killed parent orphaned (Flower
starts SuperExec and Ray in sessions of their own, below the SuperLink). Matches are looked for
again while stopping: Ray starts agents in sessions of their own, and one started while its
parent was being stopped is an orphan no tree reaches, but it still has the run's FLWR_HOME.
The ServerApp's process is SIGKILLed first (so it records no round from clients being stopped),
then SIGTERM, SIGKILL after the grace; it re-scans, so a process started meanwhile is stopped
too, and it ignores SIGINT/SIGTERM itself, so a second Ctrl-C does not cut a teardown short.
Linux only (/proc).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

STOP_GRACE_S = 10.0
POLL_S = 0.2
SERVER_APPS = ("flwr-serverapp", "flwr-simulation")  # the processes that run the ServerApp and write results


def processes() -> dict[int, tuple[int, str, int, int]]:
    """pid -> (parent pid, state, process group, session) of every process."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            table[int(stat.parent.name)] = (int(fields[1]), fields[0], int(fields[2]), int(fields[3]))
        except (OSError, IndexError, ValueError):
            continue
    return table


def members(roots: set[int], sessions: set[int]) -> set[int]:
    """Every live (not zombie) process among `roots` or descending from them, and, repeatedly,
    every process in a process group or session led by one of `sessions` or by a descendant
    (a group or session leader that is ours makes its members ours, also once orphaned). A
    root outside `sessions` leads nothing: the shell's group of `deploy | tee log` is not ours."""
    table = {pid: row for pid, row in processes().items() if row[1] != "Z"}
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    leaders, outsiders = set(sessions), set(roots) - set(sessions)
    found = roots & set(table)
    while True:
        todo = list(found | roots)
        while todo:
            for pid in children.get(todo.pop(), []):
                if pid not in found:
                    found.add(pid)
                    todo.append(pid)
        leaders |= found - outsiders
        joined = {pid for pid, (_, _, group, session) in table.items()
                  if pid not in found and (group in leaders or session in leaders)}
        if not joined:
            return found
        found |= joined


def matching(text: str) -> set[int]:
    """Live processes whose command line contains `text` (never this one)."""
    found = _scan("cmdline", lambda raw: text in raw.replace(b"\0", b" ").decode(errors="replace"))
    return alive(found - {os.getpid()})


def with_env(entries: set[str]) -> set[int]:
    """Live processes whose environment has one of the variables `entries` ("NAME=VALUE"): never
    this one nor its ancestors (the run.sh that calls it has the same environment)."""
    if not entries:
        return set()
    wanted = {e.encode() for e in entries}
    return alive(_scan("environ", lambda raw: bool(wanted & set(raw.split(b"\0")))) - ancestry())


def _scan(proc_file: str, test: Callable[[bytes], bool]) -> set[int]:
    """Pids whose /proc/PID/`proc_file` passes `test` (unreadable ones are skipped)."""
    found = set()
    for path in Path("/proc").glob(f"[0-9]*/{proc_file}"):
        try:
            if test(path.read_bytes()):
                found.add(int(path.parent.name))
        except (OSError, ValueError):
            continue
    return found


def ancestry() -> set[int]:
    """This process and its ancestors."""
    table, pid, line = processes(), os.getpid(), set()
    while pid > 1 and pid not in line:
        line.add(pid)
        pid = table.get(pid, (0,))[0]
    return line


def alive(pids: set[int]) -> set[int]:
    table = processes()
    return {pid for pid in pids if pid in table and table[pid][1] != "Z"}


def send(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def name(pid: int) -> str:
    """The program a process runs: `flower-supernode` rather than `python`."""
    try:
        argv = [Path(a).name for a in Path(f"/proc/{pid}/cmdline").read_text().split("\0") if a]
    except OSError:
        return "?"
    if argv and argv[0].startswith("python"):
        argv = [a for a in argv[1:] if not a.startswith("-")] or argv
    return argv[0] if argv else "?"


def reap() -> None:
    """Collect exited children: a dead parent must not stay a zombie (its children watch its pid)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def stop_tree(roots: set[int], sessions: set[int] = frozenset(), grace_s: float = STOP_GRACE_S,
              rescan: Callable[[], set[int]] = set) -> dict[int, str]:
    """SIGTERM every member of the trees (see `members`), SIGKILL what is left after `grace_s`;
    returns pid -> program of every process stopped. This process itself is never signalled.
    `rescan` gives more roots, looked for again at every pass (processes matched by name or
    environment that may appear while the others stop).

    A ServerApp process (`SERVER_APPS`) is SIGKILLed first, before anything else is signalled:
    stopping its clients first would let it record a round in which they all failed. Killed,
    it leaves whole rounds and its last checkpoint (atomic writes), so the run resumes.
    """
    started = time.monotonic()
    me = os.getpid()
    names: dict[int, str] = {}
    roots = set(roots) | rescan()
    servers = {pid: name(pid) for pid in members(roots, set(sessions)) - {me}}
    servers = {pid: program for pid, program in servers.items() if program in SERVER_APPS}
    for pid in servers:
        send(pid, signal.SIGKILL)
    names.update(servers)
    while alive(set(servers)) and time.monotonic() - started < grace_s:
        time.sleep(POLL_S / 4)
        reap()
    while True:
        roots |= rescan()
        for pid in members(roots, set(sessions)) - {me} - set(names):
            names[pid] = name(pid)
            send(pid, signal.SIGTERM)
        reap()
        if not alive(set(names)) or time.monotonic() - started > grace_s:
            break
        time.sleep(POLL_S)
    left = alive(set(names) | members(roots, set(sessions)) - {me})
    if left:
        print(f"still running after {grace_s:.0f} s, killing: {sorted(left)}", file=sys.stderr, flush=True)
        for pid in left:
            names.setdefault(pid, name(pid))
            send(pid, signal.SIGKILL)
        while alive(left) and time.monotonic() - started < 2 * grace_s:
            time.sleep(POLL_S / 4)
            reap()
    reap()
    return names


def summary(names: dict[int, str], seconds: float) -> str:
    """`stopped pids 1 2 3 in 1.2 s (flower-superlink: 1; ...)`."""
    by_name: dict[str, list[int]] = {}
    for pid in sorted(names):
        by_name.setdefault(names[pid], []).append(pid)
    return (f"stopped pids {' '.join(map(str, sorted(names)))} in {seconds:.1f} s "
            f"({'; '.join(f'{n}: {len(p)}' for n, p in by_name.items())})")


def main(argv: list[str] | None = None) -> int:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    parser = argparse.ArgumentParser(prog="python -m fl_app.processes", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["stop"])
    parser.add_argument("pids", type=int, nargs="*", help="roots of the trees to stop")
    parser.add_argument("--match", action="append", default=[], help="also every process whose command line has this")
    parser.add_argument("--env", action="append", default=[],
                        help="also every process whose environment has this NAME=VALUE")
    parser.add_argument("--grace", type=float, default=STOP_GRACE_S, help="seconds between SIGTERM and SIGKILL")
    args = parser.parse_args(argv)

    def matched() -> set[int]:
        return set().union(*(matching(text) for text in args.match)) | with_env(set(args.env))

    roots = set(args.pids) | matched()
    started = time.monotonic()
    names = stop_tree(roots, roots, args.grace, matched)
    if names:
        print(summary(names, time.monotonic() - started), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
