"""Seconds per FedAvg round under a real `flwr run`, against the same client work without Flower.

Run `python -m benchmarks.round [--json] [--rounds N] [--data PATH]`. In one invocation it
measures, in this order:

1. the bare loop (`benchmarks.bare`, one process): read + compact all states, then two
   rounds of the same local work (10 epochs per state, same seeds), FedAvg and evaluation of
   every state; the second, warm round is the baseline for Flower's steady rounds;
2. the same train + evaluate split over `--parallel` processes (default: the core count)
   without Flower: what that many workers do on this machine with no framework at all;
3. `./run.sh run` (run.sh's default layout unless `--actor-cpus` is given) with the study's
   FedAvg settings on the parquet for N rounds, sampling every process it starts (SuperLink,
   simulation, Ray, actors) from /proc for memory (summed PSS) and CPU. Round times are the
   server's own `round N | ... | X s` lines; round ends on this machine's clock are the
   moments the results' metrics.csv grows.

Efficiency of a round = client compute / (actors x round wall time), with client compute the
bare loop's CPU seconds for its warm round (its wall seconds are given too: on shared cores
they include other people's load). Rounds after the first are "steady"; round 1 also pays Ray
start-up and the data load. With `--json` the last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from benchmarks.proctree import Sample, TaggedSampler

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "acs_income_2018_46states.parquet"
ROUND_LINE = re.compile(r"round\s+(\d+)/\d+ \| pooled acc ([\d.]+) .*\| ([\d.]+) s \|")
ROUND_SECONDS = re.compile(r"round\s+(\d+)/\d+ \|.*\| ([\d.]+) s \|")  # any strategy's line: round, seconds
TAG_NAME = "FAIRFL_BENCH_TAG"
CORES = os.cpu_count() or 1


def loadavg() -> float:
    """The 1-minute load average, recorded beside every figure (the cores are shared)."""
    return float(Path("/proc/loadavg").read_text().split()[0])


def bare(data: Path, procs: int) -> dict[str, float]:
    """`benchmarks.bare` in a fresh process, so its memory and imports do not skew the rest."""
    before = loadavg()
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.bare", "--data", str(data), "--procs", str(procs)],
        cwd=REPO, capture_output=True, text=True, check=True,
    )
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "loadavg": [before, loadavg()]}


class RoundEnds:
    """Times at which the results' metrics.csv grew: one per finished round (its mtime)."""

    def __init__(self, path: Path, interval_s: float = 0.05) -> None:
        self.path, self.interval_s, self.ends = path, interval_s, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        size = 0
        while not self._stop.is_set():
            try:
                stat = self.path.stat()
            except FileNotFoundError:
                stat = None
            if stat is not None and stat.st_size != size:
                size = stat.st_size
                self.ends.append(stat.st_mtime)
            self._stop.wait(self.interval_s)

    def __enter__(self) -> RoundEnds:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def flower_run(data: Path, rounds: int, actor_cpus: str | None, federation: str | None) -> dict:
    """`./run.sh run` on the parquet, sampled; returns its console lines and samples."""
    tag = uuid.uuid4().hex
    env = {**os.environ, "FAIRFL_VENV": os.environ.get("FAIRFL_VENV", sys.prefix), TAG_NAME: tag}
    if actor_cpus is not None:
        env["FAIRFL_ACTOR_CPUS"] = actor_cpus
    scratch = Path(tempfile.mkdtemp(prefix="fairfl-bench-"))
    results = scratch / "results"
    config = f'data-source="table" data-path="{data}" num-server-rounds={rounds} results-dir="{results}"'
    command = [str(REPO / "run.sh"), "run", "--run-config", config]
    if federation:
        command += ["--federation-config", federation]
    lines: list[tuple[float, str]] = []
    load_before, own_cpu = loadavg(), time.process_time()
    try:
        with TaggedSampler(f"{TAG_NAME}={tag}".encode()) as sampler, RoundEnds(results / "metrics.csv") as ends:
            started = time.time()
            proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append((time.time(), line.rstrip("\n")))
                print(line, end="", file=sys.stderr, flush=True)
            code = proc.wait()
            finished = time.time()
    finally:
        shutil.rmtree(scratch)
    if code != 0:
        raise RuntimeError(f"./run.sh run failed with exit code {code}")
    return {
        "lines": lines, "sampler": sampler, "round_ends": ends.ends, "wall_s": finished - started,
        "loadavg": [load_before, loadavg()], "sampler_cpu_s": time.process_time() - own_cpu,
        "command": " ".join(command[:2] + [f"--run-config '{config}'"] + command[4:]),
        "actor_cpus": env.get("FAIRFL_ACTOR_CPUS", "run.sh default"),
    }


def rounds_from(lines: list[tuple[float, str]]) -> list[dict[str, float]]:
    """The server's per-round lines: round number, pooled accuracy, seconds."""
    found = [ROUND_LINE.search(text) for _, text in lines]
    return [{"round": int(m[1]), "pooled_acc": float(m[2]), "seconds": float(m[3])} for m in found if m]


def ray_startup(samples: list[Sample]) -> dict[str, float]:
    """Actors (and actor processes over the whole run: more would mean Ray restarted some),
    seconds from the simulation process's start to Ray's first process, and from there to
    all actors up (the first sample showing them all)."""
    procs = {p.pid: p for s in samples for p in s.procs}
    sim = [p.started for p in procs.values() if "flwr-simulation" in p.title]
    ray = [p.started for p in procs.values() if "gcs_server" in p.title]
    actors = max((len(s.actors()) for s in samples), default=0)
    up = next((s.at for s in samples if actors and len(s.actors()) == actors), None)
    out: dict[str, float] = {"actors": actors, "actor_processes_seen": len({p.pid for s in samples for p in s.actors()})}
    if sim and ray and up:
        out |= {"sim_to_ray_s": min(ray) - min(sim), "ray_start_s": up - min(ray)}
    return out


def kind(title: str) -> str:
    """A process's short name: `ray::Name` for Ray workers, else its program or module."""
    words = title.split()
    if not words:
        return "?"
    if words[0].startswith("ray::"):
        return words[0].split(".")[0]
    if "-m" in words[:3]:
        return words[words.index("-m") + 1]
    interpreted = Path(words[0]).name.startswith(("python", "bash", "sh"))
    args = [w for w in words[1:] if not w.startswith("-")] if interpreted else words
    return Path(args[0]).name if args else Path(words[0]).name


def memory_breakdown(peak: Sample) -> dict[str, int]:
    """PSS (MB) of the peak sample by kind of process, largest first."""
    out: dict[str, float] = {}
    for proc in peak.procs:
        out[kind(proc.title)] = out.get(kind(proc.title), 0.0) + proc.pss_mb
    return {k: round(v) for k, v in sorted(out.items(), key=lambda kv: -kv[1])}


def summarise(seq: dict, par: dict | None, run: dict) -> dict:
    """Every figure of the invocation; ratios are against baselines measured in it."""
    sampler: TaggedSampler = run["sampler"]
    rounds = rounds_from(run["lines"])
    startup = ray_startup(sampler.samples)
    actors = int(startup.pop("actors"))
    actor_processes = int(startup.pop("actor_processes_seen"))
    steady = [r["seconds"] for r in rounds[1:]]
    steady_s = statistics.mean(steady) if steady else None
    ends = run["round_ends"]
    actor_cpu = [sampler.cpu_between(a, b, actors=True) for a, b in zip(ends, ends[1:])]
    other_cpu = [sampler.cpu_between(a, b, actors=False) for a, b in zip(ends, ends[1:])]
    peak = sampler.peak()

    def efficiency(compute: float, seconds: float | None, workers: int) -> float | None:
        return compute / (workers * seconds) if seconds and workers else None

    out = {
        "actors": actors,
        "actor_cpus": run["actor_cpus"],
        "actor_processes_seen": actor_processes,
        "cores": CORES,
        "round_s": [r["seconds"] for r in rounds],
        "steady_round_s": steady_s,
        "bare_round_cpu_s": seq["round_compute_cpu_s"],
        "bare_round_wall_s": seq["round_compute_s"],
        "bare_data_s": seq["data_s"],
        "bare_parallel_round_s": par["round_wall_s"] if par else None,
        "bare_parallel_procs": par["procs"] if par else None,
        "bare_parallel_round_cpu_s": par["round_cpu_s"] if par else None,
        "efficiency_steady": efficiency(seq["round_compute_cpu_s"], steady_s, actors),
        "efficiency_steady_wall": efficiency(seq["round_compute_s"], steady_s, actors),
        "efficiency_steady_cores": efficiency(seq["round_compute_cpu_s"], steady_s, min(actors, CORES)),
        "efficiency_round1": efficiency(seq["round1_compute_cpu_s"] + seq["data_cpu_s"],
                                        rounds[0]["seconds"] if rounds else None, actors),
        "actor_cpu_per_steady_round_s": actor_cpu,
        "other_cpu_per_steady_round_s": other_cpu,
        "actor_pss_at_round_ends_mb": [round(sampler.nearest(t).actor_pss_mb) for t in ends],
        "ray_startup": startup,
        "peak_pss_mb": peak.pss_mb,
        "peak_rss_sum_mb": peak.rss_mb,
        "peak_processes": len(peak.procs),
        "peak_breakdown_pss_mb": memory_breakdown(peak),
        "run_sh_wall_s": run["wall_s"],
        "sampler_cpu_s": run["sampler_cpu_s"],
        "pooled_acc_flower": [r["pooled_acc"] for r in rounds[:2]],
        "pooled_acc_bare": seq["pooled_accuracy"],
        "bare_cache_mb": seq["cache_mb"],
        "bare_encoded_mb": seq["encoded_mb"],
        "bare_peak_rss_mb": seq["peak_rss_mb"],
        "loadavg": {"bare": seq["loadavg"], "parallel": par["loadavg"] if par else None, "flower": run["loadavg"]},
        "command": run["command"],
    }
    if steady_s:
        out["ratio_steady_round_to_bare_cpu"] = steady_s / seq["round_compute_cpu_s"]
        if par:
            out["ratio_steady_round_to_bare_parallel"] = steady_s / par["round_wall_s"]
    return out


def report(s: dict) -> None:
    """The human-readable table."""
    def f(v: float | None, unit: str = "") -> str:
        return "n/a" if v is None else f"{v:.2f}{unit}"

    print(f"\n{s['command']}")
    print(f"actors {s['actors']} (FAIRFL_ACTOR_CPUS {s['actor_cpus']}) on {s['cores']} cores; load averages {s['loadavg']}")
    print(f"round seconds (server)            {', '.join(f'{v:.1f}' for v in s['round_s'])}")
    print(f"steady round (mean of rounds >= 2) {f(s['steady_round_s'], ' s')}")
    print(f"bare loop, 1 process, round 2      {f(s['bare_round_cpu_s'], ' CPU s')} ({f(s['bare_round_wall_s'], ' s')} wall) "
          f"train+eval; data load+compact {f(s['bare_data_s'], ' s')}")
    print(f"bare loop, {s['bare_parallel_procs']} processes, round 2    {f(s['bare_parallel_round_s'], ' s')} wall, "
          f"{f(s['bare_parallel_round_cpu_s'], ' CPU s')}")
    print(f"steady round / bare CPU            {f(s.get('ratio_steady_round_to_bare_cpu'), 'x')}")
    print(f"steady round / bare parallel       {f(s.get('ratio_steady_round_to_bare_parallel'), 'x')}")
    print(f"efficiency steady (wall-based)     {f(s['efficiency_steady'])} ({f(s['efficiency_steady_wall'])}); "
          f"per core {f(s['efficiency_steady_cores'])}; round 1 {f(s['efficiency_round1'])}")
    print(f"CPU per steady round: actors       {', '.join(f'{v:.1f}' for v in s['actor_cpu_per_steady_round_s'])} s; "
          f"all other processes {', '.join(f'{v:.1f}' for v in s['other_cpu_per_steady_round_s'])} s")
    print(f"actors' PSS at round ends          {s['actor_pss_at_round_ends_mb']} MB "
          f"({s['actor_processes_seen']} actor processes over the run)")
    print(f"Ray start-up                       {', '.join(f'{k} {v:.1f}' for k, v in s['ray_startup'].items())}")
    print(f"peak memory (summed PSS)           {s['peak_pss_mb']:.0f} MB over {s['peak_processes']} processes "
          f"(summed RSS {s['peak_rss_sum_mb']:.0f} MB)")
    print(f"  by process                       {s['peak_breakdown_pss_mb']}")
    print(f"cache per process                  {s['bare_cache_mb']:.0f} MB compact "
          f"({s['bare_encoded_mb']:.0f} MB if kept encoded)")
    bare_acc = [round(a, 4) for a in s["pooled_acc_bare"]]
    print(f"pooled acc rounds 1, 2             flower {s['pooled_acc_flower']}, bare {bare_acc}")
    print(f"run.sh wall {s['run_sh_wall_s']:.1f} s; sampler CPU {s['sampler_cpu_s']:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--actor-cpus", help="FAIRFL_ACTOR_CPUS for run.sh (default: run.sh's own)")
    parser.add_argument("--federation-config", help="extra --federation-config for run.sh")
    parser.add_argument("--parallel", type=int, default=CORES, help="processes of the parallel bare loop; <2 skips it")
    args = parser.parse_args()
    data = args.data.resolve()
    seq = bare(data, 1)
    par = bare(data, args.parallel) if args.parallel > 1 else None
    run = flower_run(data, args.rounds, args.actor_cpus, args.federation_config)
    summary = summarise(seq, par, run)
    report(summary)
    if args.json:
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
