"""From a raw run config to a ready run: validated config, resolved data, writer and strategy.

Everything `build_run` checks happens before any training and before anything is written,
so bad config or data (or a resume that cannot continue) fails with one message and leaves
no results directory behind, nor changes the one being resumed.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

from flwr.app import ArrayRecord
from flwr.serverapp import Grid

from analysis.results import ResultsWriter, git_commit, package_versions
from clients.sources import Source, resolve_source
from clients.tasks import TASKS
from fl_app.config import ConfigError, RunConfig, absolute_results_dir, parse_config, resume_conflicts
from strategies.base import FairnessStrategy, RunContext, check_federation_size
from strategies.checkpoint import Checkpoint, load_checkpoint, remove_checkpoint
from strategies.fedavg import FedAvgStrategy
from strategies.ifca import IFCAStrategy
from strategies.perfedavg import PerFedAvgStrategy

STRATEGY_CLASSES: dict[str, type[FairnessStrategy]] = {
    "fedavg": FedAvgStrategy,
    "perfedavg": PerFedAvgStrategy,
    "ifca": IFCAStrategy,
    "fair-ifca": IFCAStrategy,
}


def build_run(raw: Mapping[str, Any], started: datetime, base: Path) -> tuple[RunContext, FairnessStrategy]:
    """Validate everything a run needs; raises ConfigError, DataError, ResultsError or FileExistsError."""
    config = parse_config(raw)
    task = TASKS[config.task]
    source = resolve_source(config.data_source, config.data_path, config.data_dir, config.states, task)
    for key, listed in (("synthetic-reversed", config.synthetic_reversed), ("fail-states", config.fail_states)):
        stray = sorted(set(listed) - set(source.states))
        if stray:
            raise ConfigError(
                f"config key '{key}' names state(s) {', '.join(stray)} outside the run's states {','.join(source.states)}"
            )
    if config.resume:
        writer = ResultsWriter(Path(config.resume).resolve())
        checkpoint = resume_point(config, source, writer, base)
    else:
        writer = ResultsWriter(absolute_results_dir(config, started.strftime("%Y%m%d-%H%M%S"), base))
        ResultsWriter.check_free(writer.directory)
        checkpoint = None
    run = RunContext(config, source, writer, checkpoint)
    return run, STRATEGY_CLASSES[config.strategy](run)


def resume_point(config: RunConfig, source: Source, writer: ResultsWriter, base: Path) -> Checkpoint | None:
    """The checkpoint a resumed run continues from (None: the run never completed a round).

    Refuses a directory that is not a run's, a finished run, and a config that differs from
    the run's in anything but num-server-rounds, naming the keys.
    """
    directory = writer.directory
    if config.results_dir and absolute_results_dir(config, "", base) != directory:
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
            f"({changes}); only num-server-rounds may change"
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


def run_federation(grid: Grid, raw: Mapping[str, Any], base: Path) -> Path:
    """The ServerApp's whole job: validate, run (or continue) the strategy's rounds, summarise."""
    started = datetime.now(timezone.utc)
    run, strategy = build_run(raw, started, base)
    check_federation_size(sorted(grid.get_node_ids()), run.source.states, run.config.clients_per_state)
    if run.config.resume:
        arrays, first_round = continue_run(run, strategy, started)
    else:
        run.writer.start(run_record(run, started))
        arrays, first_round = strategy.initial_arrays(), 1
    print(f"results: {run.writer.directory}", flush=True)
    strategy.run_rounds(grid, arrays, first_round)
    run.writer.write_summary(strategy.final_summary())
    remove_checkpoint(run.writer.directory)
    return run.writer.directory


def continue_run(run: RunContext, strategy: FairnessStrategy, started: datetime) -> tuple[ArrayRecord, int]:
    """Roll the results back to the checkpoint and restore the strategy: (arrays, first round to run)."""
    checkpoint = run.checkpoint
    done = checkpoint.server_round if checkpoint else 0
    run.writer.roll_back(checkpoint.csv_sizes if checkpoint else {})
    record = run.writer.read_config()
    record["config"], record["results_dir"] = run.config.to_dict(), str(run.writer.directory)
    record["resumed"] = [*record.get("resumed", []), {"after_round": done, "at": started.isoformat(timespec="seconds")}]
    run.writer.start(record)
    print(f"resuming '{run.writer.directory}' after round {done}", flush=True)
    return (strategy.resume(checkpoint), done + 1) if checkpoint else (strategy.initial_arrays(), 1)


def run_record(run: RunContext, started: datetime) -> dict[str, Any]:
    """config.json: resolved config, data source, clients, versions, commit, seed."""
    task = TASKS[run.config.task]
    return {
        "config": run.config.to_dict(),
        "seed": run.config.seed,
        "data": {
            "source": run.source.kind,
            "path": run.source.path,
            "note": run.source.note,
            "states": list(run.source.states),
            "num_clients": len(run.source.states) * run.config.clients_per_state,
            "input_width": task.width,
            "hidden": task.hidden,
        },
        "results_dir": str(run.writer.directory),
        "started": started.isoformat(timespec="seconds"),
        "versions": package_versions(),
        "git_commit": git_commit(),
    }
