"""ServerApp: validate the config, resolve the data, build the strategy, run it, write the summary."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fl_app.setup import build_run, initial_arrays, run_record
from strategies.base import check_federation_size

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    started = datetime.now(timezone.utc)
    run, strategy = build_run(context.run_config, started, Path.cwd())
    check_federation_size(sorted(grid.get_node_ids()), run.source.states)
    run.writer.start(run_record(run, started))
    print(f"results: {run.writer.directory}", flush=True)
    strategy.start(
        grid=grid,
        initial_arrays=initial_arrays(run.config),
        num_rounds=run.config.num_server_rounds,
    )
    run.writer.write_summary(strategy.final_summary())
