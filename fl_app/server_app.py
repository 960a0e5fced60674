"""ServerApp: hand the run config to `run_federation` (validate, build the strategy, run, summarise),
over a grid that looks for replies every 5 ms in simulation, 0.1 s on the deployment engine
(strategies/polling.py)."""

from __future__ import annotations

from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fl_app.setup import run_federation
from strategies.polling import PollingGrid

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    run_federation(PollingGrid.around(grid), context.run_config, Path.cwd())
