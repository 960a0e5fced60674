"""Memory and CPU of every process a run starts, found by an environment tag, from /proc.

`flwr run` detaches the SuperLink, which starts the simulation, which starts Ray, whose
raylet starts the workers: they are not one process tree under the caller. All of them
inherit the environment, so the caller sets a unique variable and the sampler follows every
process carrying it. Memory is summed as PSS (shared pages split between their users), so
libraries and Ray's shared object store count once in total, not once per process as RSS.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

PROC = Path("/proc")
TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
ACTOR_TITLE = "ray::ClientAppActor"


def _boot_time() -> float:
    for line in (PROC / "stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    raise RuntimeError("no btime in /proc/stat")


BOOT_TIME = _boot_time()


@dataclass(frozen=True)
class Proc:
    """One sampled process: title, start (epoch s), CPU seconds so far, PSS and RSS in MB."""

    pid: int
    title: str
    started: float
    cpu_s: float
    pss_mb: float
    rss_mb: float


@dataclass
class Sample:
    """Every tagged process at one moment (epoch seconds)."""

    at: float
    procs: list[Proc]

    @property
    def pss_mb(self) -> float:
        return sum(p.pss_mb for p in self.procs)

    @property
    def rss_mb(self) -> float:
        return sum(p.rss_mb for p in self.procs)

    @property
    def actor_pss_mb(self) -> float:
        return sum(p.pss_mb for p in self.actors())

    def actors(self) -> list[Proc]:
        return [p for p in self.procs if p.title.startswith(ACTOR_TITLE)]


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:  # the process ended between listing and reading
        return b""


def _proc(pid: int) -> Proc | None:
    base = PROC / str(pid)
    stat = _read(base / "stat").decode(errors="replace")
    rollup = _read(base / "smaps_rollup").decode(errors="replace")
    if not stat or not rollup:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    pss_kb = next((int(line.split()[1]) for line in rollup.splitlines() if line.startswith("Pss:")), 0)
    rss_pages = int(fields[21])
    title = _read(base / "cmdline").replace(b"\0", b" ").decode(errors="replace").strip()
    return Proc(
        pid=pid,
        title=title,
        started=BOOT_TIME + int(fields[19]) * TICK_S,
        cpu_s=(int(fields[11]) + int(fields[12])) * TICK_S,
        pss_mb=pss_kb / 1024,
        rss_mb=rss_pages * PAGE_KB / 1024,
    )


@dataclass
class TaggedSampler:
    """Samples, every `interval_s` in a background thread, all processes whose environment
    holds `tag` (as `NAME=value`); `samples` keeps every sample for later analysis."""

    tag: bytes
    interval_s: float = 1.0
    samples: list[Sample] = field(default_factory=list)
    _known: dict[int, bool] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _tagged(self, pid: int) -> bool:
        # Read once per pid: a process gets its environment from its parent at fork, and
        # every launcher in a run (flwr, Ray) passes it on through exec.
        if pid not in self._known:
            self._known[pid] = self.tag in _read(PROC / str(pid) / "environ").split(b"\0")
        return self._known[pid]

    def sample(self) -> Sample:
        procs = []
        for entry in PROC.iterdir():
            if entry.name.isdigit() and self._tagged(int(entry.name)):
                proc = _proc(int(entry.name))
                if proc is not None:
                    procs.append(proc)
        return Sample(time.time(), procs)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self.sample())
            self._stop.wait(self.interval_s)

    def __enter__(self) -> TaggedSampler:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def nearest(self, at: float) -> Sample:
        """The sample taken closest to time `at`."""
        return min(self.samples, key=lambda s: abs(s.at - at))

    def peak(self) -> Sample:
        """The sample with the largest summed PSS."""
        return max(self.samples, key=lambda s: s.pss_mb)

    def cpu_between(self, start: float, end: float, actors: bool) -> float:
        """CPU seconds the actors (or all other processes) used from `start` to `end`.

        Per process, linear between its samples: 0 before it started, its last value after
        it ended, so processes coming and going (e.g. `flwr ls` polls) are counted right."""
        series: dict[int, list[tuple[float, float, float]]] = {}
        for sample in self.samples:
            for proc in sample.procs:
                if proc.title.startswith(ACTOR_TITLE) == actors:
                    series.setdefault(proc.pid, []).append((sample.at, proc.cpu_s, proc.started))
        return sum(_cpu_at(points, end) - _cpu_at(points, start) for points in series.values())


def _cpu_at(points: list[tuple[float, float, float]], at: float) -> float:
    """One process's CPU seconds at time `at`, from its (time, cpu, started) samples."""
    first_at, first_cpu, started = points[0]
    if at <= first_at:
        return 0.0 if at <= started else first_cpu * (at - started) / max(first_at - started, 1e-9)
    for (t0, c0, _), (t1, c1, _) in zip(points, points[1:]):
        if at <= t1:
            return c0 + (c1 - c0) * (at - t0) / (t1 - t0)
    return points[-1][1]
