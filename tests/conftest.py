"""Shared test data builders: small frames of raw income codes made here, never read from disk."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from flwr.app import Context, RecordDict
from flwr.common.config import get_fused_config_from_dir
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity

from fl_app.client_app import app as client_app
from fl_app.setup import run_federation

REPO = Path(__file__).resolve().parent.parent


def income_frame(state: str, n: int, seed: int = 0) -> pd.DataFrame:
    """n random income records of one state, raw PUMS code ranges, about 40% positive."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "STATE": state,
            "AGEP": rng.integers(17, 90, n), "COW": rng.integers(1, 9, n), "SCHL": rng.integers(1, 25, n),
            "MAR": rng.integers(1, 6, n), "OCCP": rng.integers(10, 9830, n), "POBP": rng.integers(1, 555, n),
            "RELP": rng.integers(0, 18, n), "WKHP": rng.integers(1, 99, n), "SEX": rng.integers(1, 3, n),
            "RAC1P": rng.integers(1, 10, n), "label": rng.random(n) < 0.4,
        }
    )


@pytest.fixture
def make_income_frame():
    return income_frame


class InProcessGrid(Grid):
    """Delivers each message straight to the real ClientApp in this process.

    For fast, Ray-free strategy tests: the same ServerApp code path (`run_federation`) and
    the same ClientApp handlers as `flwr run`, without the transport. End-to-end tests
    use the real `flwr run`.
    """

    def __init__(self, run_config: dict, num_nodes: int) -> None:
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
        self.contexts = {
            1000 + i: Context(run_id=1, node_id=1000 + i, node_config={"partition-id": i, "num-partitions": num_nodes},
                              state=RecordDict(), run_config=run_config)
            for i in range(num_nodes)
        }

    def get_node_ids(self):
        return list(self.contexts)

    def send_and_receive(self, messages, *, timeout=None):
        return [client_app(m, self.contexts[m.metadata.dst_node_id]) for m in messages]

    def set_run(self, run):
        raise NotImplementedError

    @property
    def run(self):
        raise NotImplementedError

    def create_message(self, *args, **kwargs):
        raise NotImplementedError

    def push_messages(self, messages):
        raise NotImplementedError

    def pull_messages(self, message_ids):
        raise NotImplementedError


def run_in_process(overrides: dict, results_dir: Path) -> Path:
    """Run the app's ServerApp logic over an in-process federation; returns the results dir."""
    raw = get_fused_config_from_dir(REPO, {**overrides, "results-dir": str(results_dir)})
    states = [s for s in str(raw["states"]).split(",") if s]
    return run_federation(InProcessGrid(raw, len(states)), raw, results_dir.parent)


@pytest.fixture
def federation():
    return run_in_process
