"""From a raw run config to a ready run: validated config, resolved data, writer and strategy.

Everything here happens before any training and before anything is written, so bad config
or data fails with one message and leaves no results directory behind.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Mapping

from analysis.results import ResultsWriter, git_commit, package_versions
from clients.model import init_params
from clients.sources import resolve_source
from clients.tasks import TASKS
from fl_app.config import RunConfig, absolute_results_dir, parse_config
from strategies.base import FairnessStrategy, RunContext
from strategies.fedavg import FedAvgStrategy
from strategies.messages import to_record

STRATEGY_CLASSES: dict[str, type[FairnessStrategy]] = {"fedavg": FedAvgStrategy}


def build_run(raw: Mapping[str, Any], started: datetime, base: Path) -> tuple[RunContext, FairnessStrategy]:
    """Validate everything a run needs; raises ConfigError, DataError or FileExistsError."""
    config = parse_config(raw)
    if config.strategy not in STRATEGY_CLASSES:
        raise NotImplementedError(f"strategy '{config.strategy}' is not available yet; use one of {', '.join(STRATEGY_CLASSES)}")
    task = TASKS[config.task]
    source = resolve_source(config.data_source, config.data_path, config.data_dir, config.states, task)
    directory = absolute_results_dir(config, started.strftime("%Y%m%d-%H%M%S"), base)
    ResultsWriter.check_free(directory)
    run = RunContext(config, source, ResultsWriter(directory))
    return run, STRATEGY_CLASSES[config.strategy](run)


def initial_arrays(config: RunConfig):
    task = TASKS[config.task]
    return to_record(init_params(task.width, task.hidden, config.seed))


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
