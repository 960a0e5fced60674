"""FedAvg rounds' client work without Flower: the baseline `benchmarks.round` compares against.

Per state it does what the ClientApp does, with the project's own functions: `state_data`
(read + split + compact once per process; each split is encoded when a message first uses
it), `train_local` with the round's seed, `evaluate_local` on the test split. `sequential`
runs two rounds in one process, averaging the trained models as FedAvg does, so its pooled
accuracies must equal the ones `flwr run` prints for rounds 1 and 2. `parallel` gives each
of P spawned processes a share of the states (largest first, to the least loaded) and times
a round from a barrier: what P workers can do on this machine with no framework at all.

Both wall and CPU seconds are kept: the cores are shared, and CPU time is what other
people's load inflates least.

`python -m benchmarks.bare --data PATH [--procs P]` prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from flwr.common.config import get_fused_config_from_dir

from clients.data import StateCodes, StateData, state_codes, state_data
from clients.local import TRAIN, evaluate_local, local_rng, train_local
from clients.shards import ClientId
from clients.sources import Source, check_table
from core.counts import population_metrics
from core.params import Params, init_params
from core.tasks import TASKS
from fl_app.config import parse_config
from strategies.aggregation import weighted_average

REPO = Path(__file__).resolve().parent.parent
SETTINGS = parse_config(get_fused_config_from_dir(REPO, {}))  # the study's settings, as `flwr run` reads them
TASK = TASKS[SETTINGS.task]


@contextmanager
def timed(into: dict[str, float], name: str) -> Iterator[None]:
    """Add the block's wall and CPU seconds to `into[name + "_s"]` and `into[name + "_cpu_s"]`."""
    wall, cpu = time.perf_counter(), time.process_time()
    yield
    into[f"{name}_s"] = into.get(f"{name}_s", 0.0) + time.perf_counter() - wall
    into[f"{name}_cpu_s"] = into.get(f"{name}_cpu_s", 0.0) + time.process_time() - cpu


def _source(path: str) -> Source:
    resolved = Path(path).resolve()
    return Source("table", str(resolved), check_table(resolved, TASK))


def _data(source: Source, state: str) -> StateData:
    return state_data(source, TASK.name, ClientId(state), SETTINGS.seed, 0)


def _train(source: Source, state: str, params: Params, server_round: int) -> tuple[Params, int]:
    split = _data(source, state).train
    trained, _ = train_local(
        params, split, lr=SETTINGS.lr, epochs=SETTINGS.local_epochs, batch_size=SETTINGS.batch_size,
        rng=local_rng(SETTINGS.seed, ClientId(state), server_round, TRAIN),
    )
    return trained, len(split)


def _nbytes(codes: StateCodes) -> int:
    """Bytes of numpy data a process caches for one state."""
    parts = [*codes.tables]
    for split in (codes.train, codes.test, codes.val):
        parts += [*split.rows, split.y, *split.groups.values()]
    return sum(p.nbytes for p in parts)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _fedavg_round(source: Source, params: Params, server_round: int, out: dict[str, float]) -> tuple[Params, float]:
    """Every state trains from `params`, the models are averaged and evaluated; returns the
    average and its pooled accuracy (what the server prints for that round)."""
    with timed(out, f"round{server_round}_train"):
        trained = [_train(source, s, params, server_round) for s in source.states]
    merged = weighted_average([p for p, _ in trained], [n for _, n in trained])
    with timed(out, f"round{server_round}_eval"):
        evaluations = [evaluate_local(merged, _data(source, s).test, i) for i, s in enumerate(source.states)]
    counts = np.sum([e.counts["sex"] for e in evaluations], axis=0)
    return merged, population_metrics(counts)["accuracy"]


def sequential(path: str) -> dict[str, float]:
    """Load every state, then two FedAvg rounds in one process.

    Round 2 is the steady-state baseline: in round 1 each split is encoded into memory the
    allocator has never handed out, and those page faults made round 1 about 1 s slower."""
    out: dict[str, float] = {}
    with timed(out, "data"):
        source = _source(path)
        cached = [state_codes(source, TASK.name, s, SETTINGS.seed, 0) for s in source.states]
    merged, accuracy1 = _fedavg_round(source, init_params(TASK.width, TASK.hidden, SETTINGS.seed), 1, out)
    _, accuracy2 = _fedavg_round(source, merged, 2, out)
    with timed(out, "expand"):  # the share of a round that keeping the cache compact costs
        for state in source.states:
            data = _data(source, state)
            _ = data.train, data.test
    return {
        "states": len(source.states),
        **out,
        "round_compute_s": out["round2_train_s"] + out["round2_eval_s"],
        "round_compute_cpu_s": out["round2_train_cpu_s"] + out["round2_eval_cpu_s"],
        "round1_compute_cpu_s": out["round1_train_cpu_s"] + out["round1_eval_cpu_s"],
        "pooled_accuracy": [accuracy1, accuracy2],
        "cache_mb": sum(_nbytes(c) for c in cached) / 2**20,
        "encoded_mb": sum(len(c.train.y) + len(c.test.y) for c in cached) * TASK.width * 4 / 2**20,
        "peak_rss_mb": _peak_rss_mb(),
    }


def _shares(source: Source, procs: int) -> list[list[str]]:
    """Largest state first to the least-loaded process."""
    rows = pq.read_table(source.path, columns=["STATE"]).column("STATE").value_counts().to_pylist()
    counts = {str(r["values"]): int(r["counts"]) for r in rows}
    shares: list[list[str]] = [[] for _ in range(procs)]
    loads = [0] * procs
    for state in sorted(source.states, key=lambda s: -counts[s]):
        target = loads.index(min(loads))
        shares[target].append(state)
        loads[target] += counts[state]
    return shares


def _worker(path: str, states: list[str], barrier, results) -> None:
    """One process's share: load, then two rounds of train + evaluate, each started from a
    barrier; round 2 is reported (evaluation uses the start model: it costs the same whatever
    the weights)."""
    source = _source(path)
    for state in states:
        state_codes(source, TASK.name, state, SETTINGS.seed, 0)
    params = init_params(TASK.width, TASK.hidden, SETTINGS.seed)
    for server_round in (1, 2):
        barrier.wait()
        started, cpu = time.time(), time.process_time()
        for index, state in enumerate(states):
            _train(source, state, params, server_round)
            evaluate_local(params, _data(source, state).test, index)
    results.put({"started": started, "ended": time.time(), "cpu_s": time.process_time() - cpu,
                 "peak_rss_mb": _peak_rss_mb()})


def parallel(path: str, procs: int) -> dict[str, float]:
    """Two rounds of train + evaluate of every state on `procs` processes at once; round 2's
    wall time, from the barrier to the last process done."""
    context = mp.get_context("spawn")
    barrier, results = context.Barrier(procs), context.Queue()
    workers = [
        context.Process(target=_worker, args=(path, share, barrier, results))
        for share in _shares(_source(path), procs)
    ]
    for worker in workers:
        worker.start()
    reports = [results.get() for _ in workers]
    for worker in workers:
        worker.join()
    return {
        "procs": procs,
        "round_wall_s": max(r["ended"] for r in reports) - min(r["started"] for r in reports),
        "round_cpu_s": sum(r["cpu_s"] for r in reports),
        "peak_rss_mb_sum": sum(r["peak_rss_mb"] for r in reports),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="the 46-state parquet")
    parser.add_argument("--procs", type=int, default=1, help="1: sequential with FedAvg; >1: parallel")
    args = parser.parse_args()
    result = sequential(args.data) if args.procs == 1 else parallel(args.data, args.procs)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
