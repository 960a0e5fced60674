"""From a raw run config to a ready run: validated config, resolved data, writer and strategy.

Everything here happens before any training and before anything is written, so bad config
or data fails with one message and leaves no results directory behind.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

from flwr.serverapp import Grid

from analysis.results import ResultsWriter, git_commit, package_versions
from clients.sources import resolve_source
from clients.tasks import TASKS
from fl_app.config import ConfigError, absolute_results_dir, parse_config
from strategies.base import FairnessStrategy, RunContext, check_federation_size
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
    """Validate everything a run needs; raises ConfigError, DataError or FileExistsError."""
    config = parse_config(raw)
    task = TASKS[config.task]
    source = resolve_source(config.data_source, config.data_path, config.data_dir, config.states, task)
    stray = sorted(set(config.synthetic_reversed) - set(source.states))
    if stray:
        raise ConfigError(f"synthetic-reversed names state(s) {', '.join(stray)} outside the run's states {','.join(source.states)}")
    directory = absolute_results_dir(config, started.strftime("%Y%m%d-%H%M%S"), base)
    ResultsWriter.check_free(directory)
    run = RunContext(config, source, ResultsWriter(directory))
    return run, STRATEGY_CLASSES[config.strategy](run)



def run_federation(grid: Grid, raw: Mapping[str, Any], base: Path) -> Path:
    """The ServerApp's whole job: validate, then run the strategy and write the results."""
    started = datetime.now(timezone.utc)
    run, strategy = build_run(raw, started, base)
    check_federation_size(sorted(grid.get_node_ids()), run.source.states)
    run.writer.start(run_record(run, started))
    print(f"results: {run.writer.directory}", flush=True)
    strategy.start(grid=grid, initial_arrays=strategy.initial_arrays(), num_rounds=run.config.num_server_rounds)
    run.writer.write_summary(strategy.final_summary())
    return run.writer.directory


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
            "num_clients": len(run.source.states),
            "input_width": task.width,
            "hidden": task.hidden,
        },
        "results_dir": str(run.writer.directory),
        "started": started.isoformat(timespec="seconds"),
        "versions": package_versions(),
        "git_commit": git_commit(),
    }
