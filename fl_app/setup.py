"""From a raw run config to a ready run: validated config, resolved data, algorithm, recorder.

Everything `build_run` checks happens before any training and before anything is written,
so bad config or data (or a resume that cannot continue) fails with one message and leaves
no results directory behind, nor changes the one being resumed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from logging import ERROR, INFO
from pathlib import Path
from typing import Any

from flwr.common.logger import log
from flwr.serverapp import Grid

from clients.shards import client_labels
from clients.sources import Source, resolve_source
from core.bundle import tag_of
from core.params import init_params
from core.plateau import Plateau
from core.rounds import RoundResult
from core.tasks import task_for
from fl_app.config import ConfigError, RunConfig, absolute_results_dir, parse_config, resume_conflicts
from fl_app.replicates import client_keys, replicate_configs
from recorder.checkpoint import Checkpoint, load_checkpoint, remove_checkpoint
from recorder.files import ResultsWriter, git_commit, package_versions
from recorder.recorder import Recorder
from strategies.algorithm import Algorithm, ServerSetup
from strategies.flower import resume_refusal
from strategies.loop import Exchange, Member, Step, Trained, check_federation_size, step
from strategies.registry import spec_for


@dataclass(frozen=True)
class Run:
    """A validated run: config, data, the server half of its strategy, its recorder, where it resumes."""

    config: RunConfig
    source: Source
    algorithm: Algorithm
    recorder: Recorder
    checkpoint: Checkpoint | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)  # the raw run config it was built from

    @property
    def writer(self) -> ResultsWriter:
        return self.recorder.writer


def build_run(raw: Mapping[str, Any], started: datetime, base: Path) -> Run:
    """Validate everything a run needs; raises ConfigError, DataError, ResultsError or FileExistsError."""
    config = parse_config(raw)
    task = task_for(config.task, config.encoding)
    source = resolve_source(config.data_source, config.data_path, config.data_dir, config.states, task)
    for key, listed in (("synthetic-reversed", config.synthetic_reversed), ("fail-states", config.fail_states)):
        stray = sorted(set(listed) - set(source.states))
        if stray:
            raise ConfigError(
                f"config key '{key}' names state(s) {', '.join(stray)} outside the run's states {','.join(source.states)}"
            )
    outside = sorted({s for s in config.bindings().values() if s not in source.states})
    if outside:
        raise ConfigError(
            f"config key 'node-states' binds nodes to state(s) {', '.join(outside)} outside the run's states "
            f"{','.join(source.states)}"
        )
    num_clients = len(source.states) * config.clients_per_state
    if config.min_updates(num_clients) > num_clients:
        raise ConfigError(
            f"config key 'min-clients' ({config.min_clients:g}) asks for more clients than the run has ({num_clients})"
        )
    if config.resume:
        refusal = resume_refusal(config.strategy)
        if refusal:
            raise ConfigError(f"config key 'resume': {refusal}")
        writer = ResultsWriter(Path(config.resume).resolve())
        checkpoint = resume_point(config, source, writer, base)
    else:
        writer = ResultsWriter(absolute_results_dir(config, started.strftime("%Y%m%d-%H%M%S"), base, source.kind))
        ResultsWriter.check_free(writer.directory)
        checkpoint = None
    clients = client_labels(source.states, config.clients_per_state)
    setup = ServerSetup(config, clients, source, partial(init_params, task.width, task.hidden))
    spec = spec_for(config.strategy)
    algorithm = spec.server(setup)
    recorder = Recorder(writer, clients, config.strategy, config.task, source.kind, config.num_server_rounds,
                        plateau=Plateau(config.stop_patience, config.stop_min_delta))
    return Run(config, source, algorithm, recorder, checkpoint, dict(raw))


def build_runs(raw: Mapping[str, Any], started: datetime, base: Path) -> list[Run]:
    """Every replicate's run (fl_app/replicates.py), validated, all on the same data."""
    configs = replicate_configs(raw)
    runs = [build_run(config, started, base) for config in configs]
    if len(runs) > 1:
        for index, run in enumerate(runs):
            run.recorder.label = f"[{tag_of(index)} {run.config.strategy} seed {run.config.seed}] "
    for index, run in enumerate(runs[1:], start=1):
        if run.source != runs[0].source:
            raise ConfigError(f"replicate {index} resolves its data to {run.source.kind} {run.source.path!r}, "
                              f"replicate 0 to {runs[0].source.kind} {runs[0].source.path!r}; "
                              "the replicates of a federation share one data source")
    return runs


def resume_point(config: RunConfig, source: Source, writer: ResultsWriter, base: Path) -> Checkpoint | None:
    """The checkpoint a resumed run continues from (None: the run never completed a round).

    Refuses a directory that is not a run's, a finished run, and a config that differs from
    the run's in anything but num-server-rounds and the operational keys (fl_app/config.py's
    RESUME_MAY_CHANGE), naming the keys.
    """
    directory = writer.directory
    if config.results_dir and absolute_results_dir(config, "", base, source.kind) != directory:
        raise ConfigError(
            f"config keys 'resume' ({directory}) and 'results-dir' ({config.results_dir}) name different "
            "directories; a resumed run writes to its own, so give only 'resume'"
        )
    if not (directory / "config.json").is_file():
        raise ConfigError(f"config key 'resume': '{directory}' holds no config.json, so it is no run's results directory")
    record = writer.read_config()
    before, now = record.get("config", {}), config.to_dict()
    conflicts = resume_conflicts(before, now)
    if conflicts:
        changes = "; ".join(f"{k} {before.get(k)!r} -> {now.get(k)!r}" for k in conflicts)
        raise ConfigError(
            f"cannot resume '{directory}' with a different config: key(s) {', '.join(conflicts)} differ "
            f"({changes}); only num-server-rounds, round-timeout, max-failed-rounds and node-states may change"
        )
    data = record.get("data", {})
    if (data.get("source"), data.get("states")) != (source.kind, list(source.states)):
        raise ConfigError(
            f"cannot resume '{directory}': its data was {data.get('source')} {data.get('states')}, "
            f"now {source.kind} {list(source.states)}"
        )
    checkpoint = load_checkpoint(directory)
    if checkpoint is None and (directory / "summary.json").exists():
        raise ConfigError(f"config key 'resume': the run in '{directory}' has finished (summary.json); nothing to resume")
    if checkpoint is not None and checkpoint.server_round > config.num_server_rounds:
        raise ConfigError(
            f"config key 'num-server-rounds' ({config.num_server_rounds}) is below the "
            f"{checkpoint.server_round} rounds '{directory}' has completed"
        )
    writer.check_sizes(checkpoint.csv_sizes if checkpoint else {})
    return checkpoint


def run_federation(grid: Grid, raw: Mapping[str, Any], base: Path) -> list[Path]:
    """The ServerApp's whole job: validate every replicate, run (or continue) their rounds in
    lockstep over one federation, summarise each; their results directories.

    A replicate that finishes, plateaus (`stop-patience`) or stops (`max-failed-rounds`) drops out
    and the others go on; the run fails at the end if any stopped for want of updates."""
    started = datetime.now(UTC)
    runs = build_runs(raw, started, base)
    lead = runs[0]
    check_federation_size(sorted(grid.get_node_ids()), lead.source.states, lead.config.clients_per_state)
    replicates = []
    for index, run in enumerate(runs):
        first_round = continue_run(run, started) if run.config.resume else start_run(run, started)
        log(INFO, "results: %s", run.writer.directory)
        log(INFO, "[%s] %d clients, %d rounds, task %s, data %s (%s)", run.config.strategy, len(run.recorder.clients),
            run.config.num_server_rounds, run.config.task, run.source.kind, run.source.label)
        member = Member(tag_of(index), run.algorithm, client_keys(raw, run.raw),
                        run.config.min_updates(len(run.recorder.clients)))
        replicates.append(Replicate(run, member, first_round))
    exchange = Exchange(grid, lead.source, len(lead.recorder.clients), timeout_s=lead.config.round_timeout,
                        bindings=lead.config.bindings())
    stops: list[QuorumError] = []
    sized = False
    while active := [r for r in replicates if not r.done]:
        for replicate in active:
            if replicate.idle():
                replicate.finish()
        moving = [r for r in active if not r.done]
        outcomes = step([r.step() for r in moving], exchange)
        if not sized:  # the first exchange identified the nodes (in its message, or in one before it)
            sized = True
            for replicate in moving:
                record_sizes(replicate.run, exchange.sizes.get(replicate.member.tag, {}))
        for replicate, (result, trained) in zip(moving, outcomes):
            stop = replicate.advance(result, trained)
            if stop:
                log(ERROR, "%s", stop)
                stops.append(stop)
    if stops:
        raise stops[0] if len(stops) == 1 else QuorumStops(stops)
    return [run.writer.directory for run in runs]


class Replicate:
    """One replicate in the loop: its run, its member of the exchange, the next round it trains,
    and its trained round waiting for its evaluation."""

    def __init__(self, run: Run, member: Member, next_round: int) -> None:
        self.run, self.member, self.next_round = run, member, next_round
        self.pending: Trained | None = None
        self.kept_in_a_row = 0
        self.last_round = run.config.num_server_rounds  # lowered when max-failed-rounds stops it
        self.done = False

    def step(self) -> Step:
        return Step(self.member, self.next_round if self.next_round <= self.last_round else None, self.pending)

    def idle(self) -> bool:
        """Nothing to train or evaluate any more: the run is complete."""
        return self.next_round > self.last_round and self.pending is None

    def evaluates(self, server_round: int) -> bool:
        """`eval-every` rounds, and the last one (the summary's and a stop's), are evaluated."""
        return server_round % self.run.config.eval_every == 0 or server_round == self.last_round

    def advance(self, result: RoundResult | None, trained: Trained | None) -> QuorumError | None:
        """Record the evaluated round with its checkpoint; keep the trained one for the next exchange
        (or record it now, without evaluations, if it is not evaluated). The stop once the last of
        `max-failed-rounds` rounds in a row that kept the model is recorded.

        If the evaluated round is the plateau's, the replicate finishes there: the round trained in
        the same exchange is dropped unrecorded, as it is in the same run alone."""
        stop = self.record(result, self.pending) if result is not None and self.pending is not None else None
        self.pending = None
        if (result is not None and not self.done and result.server_round < self.last_round
                and self.run.recorder.plateau.reached(result.server_round)):
            self.stop_early(result.server_round)
            return stop
        if trained is not None:
            self.next_round = trained.server_round + 1
            self.kept_in_a_row = self.kept_in_a_row + 1 if trained.health.model_kept else 0
            if self.kept_in_a_row >= self.run.config.max_failed_rounds:
                self.last_round = trained.server_round
            if self.evaluates(trained.server_round):
                self.pending = trained
            else:
                unevaluated = RoundResult(trained.server_round, [], trained.clusters, trained.choices, trained.health)
                stop = self.record(unevaluated, trained) or stop
        return stop

    def record(self, result: RoundResult, trained: Trained) -> QuorumError | None:
        self.run.recorder.commit(result, trained.arrays, trained.state)
        if self.kept_in_a_row >= self.run.config.max_failed_rounds and result.server_round == self.last_round:
            self.done = True
            return QuorumError(self.run, result, self.kept_in_a_row)
        return None

    def stop_early(self, server_round: int) -> None:
        plateau = self.run.recorder.plateau
        log(INFO, "%sstopped early after round %d of %d: pooled validation loss not below %.6g (round %d) by more "
            "than stop-min-delta %g for stop-patience %d rounds", self.run.recorder.label, server_round,
            self.run.config.num_server_rounds, plateau.best_loss, plateau.best_round, plateau.min_delta,
            plateau.patience)
        self.finish()

    def finish(self) -> None:
        self.run.writer.write_summary(self.run.recorder.final_summary())
        remove_checkpoint(self.run.writer.directory)
        self.done = True


class QuorumStops(RuntimeError):
    """Several replicates stopped for want of usable updates; each message in turn."""

    def __init__(self, stops: list[QuorumError]) -> None:
        super().__init__(f"{len(stops)} replicates stopped: " + " | ".join(str(s) for s in stops))


class QuorumError(RuntimeError):
    """`max-failed-rounds` rounds in a row kept the model: the run stops (non-zero), resumable."""

    def __init__(self, run: Run, result: RoundResult, rounds: int) -> None:
        health, clients = result.health, run.recorder.clients
        missing = [clients[c] for c in range(len(clients)) if c not in health.trained]
        super().__init__(
            f"{rounds} round(s) in a row (max-failed-rounds {run.config.max_failed_rounds}) had fewer usable "
            f"training updates than min-clients {health.quorum} and kept the model; in round {result.server_round} "
            f"{len(health.trained)} of {len(clients)} clients gave one, missing: {', '.join(missing)}. The run "
            f"stops; its checkpoint after round {result.server_round} is kept: continue with "
            f"resume=\"{run.writer.directory}\" once the clients are back"
        )


def start_run(run: Run, started: datetime) -> int:
    run.writer.start(run_record(run, started))
    return 1


def continue_run(run: Run, started: datetime) -> int:
    """Roll the results back to the checkpoint and restore the run's state: the first round to run."""
    checkpoint = run.checkpoint
    done = checkpoint.server_round if checkpoint else 0
    run.writer.roll_back(checkpoint.csv_sizes if checkpoint else {})
    record = run.writer.read_config()
    record["config"], record["results_dir"] = run.config.to_dict(), str(run.writer.directory)
    record["resumed"] = [*record.get("resumed", []), {"after_round": done, "at": started.isoformat(timespec="seconds")}]
    run.writer.start(record)
    log(INFO, "resuming '%s' after round %d", run.writer.directory, done)
    if checkpoint:
        run.algorithm.restore(checkpoint.arrays, checkpoint.strategy_state)
        run.recorder.restore(checkpoint)
    return done + 1


def record_sizes(run: Run, sizes: Mapping[int, list[int]]) -> None:
    """config.json's `data.client_sizes`: the records each client reported in its splits."""
    record = run.writer.read_config()
    record["data"]["client_sizes"] = {
        run.recorder.clients[c]: dict(zip(("train", "test", "val"), n)) for c, n in sorted(sizes.items())
    }
    run.writer.start(record)


def run_record(run: Run, started: datetime) -> dict[str, Any]:
    """config.json: resolved config, data source, clients, versions, commit, seed."""
    task = task_for(run.config.task, run.config.encoding)
    return {
        "config": run.config.to_dict(),
        "seed": run.config.seed,
        "data": {
            "source": run.source.kind,
            "label": run.source.label,
            "path": run.source.path,
            "note": run.source.note,
            "states": list(run.source.states),
            "num_clients": len(run.recorder.clients),
            "input_width": task.width,
            "hidden": task.hidden,
        },
        "results_dir": str(run.writer.directory),
        "started": started.isoformat(timespec="seconds"),
        "versions": package_versions(),
        "git_commit": git_commit(),
    }
