"""Shared test helpers: small frames of raw income codes made here (never read from disk), an
in-process federation for fast runs, and real `./run.sh run` runs where only those will do."""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import types
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from flwr.app import Context, Error, Message, RecordDict
from flwr.common.config import get_fused_config_from_dir
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity

from core.cache_dir import ENV as CACHE_ENV
from core.cache_dir import cache_root
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


@pytest.fixture
def network_attempts(monkeypatch):
    """Every attempt to open a connection or a URL, each refused; a test asserts there were none."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access attempted in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    return attempts


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
        return [self.deliver(m) for m in messages]

    def deliver(self, message: Message) -> Message:
        """The ClientApp's reply; an exception becomes an error reply, as Flower's runtime makes it."""
        try:
            return client_app(message, self.contexts[message.metadata.dst_node_id])
        except Exception as ex:  # any ClientApp exception is a failed client
            error = Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=f"{type(ex)}:<'{ex}'>")
            return Message(error, reply_to=message)

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


def run_in_process(
    overrides: dict, results_dir: Path, grid_class: type[InProcessGrid] = InProcessGrid, num_nodes: int | None = None
) -> Path:
    """Run the app's ServerApp logic over an in-process federation of `num_nodes` nodes
    (default: one per client, states x clients-per-state); returns the results dir."""
    return run_replicates_in_process({**overrides, "results-dir": str(results_dir)}, results_dir.parent,
                                     grid_class, num_nodes)[0]


def run_replicates_in_process(
    overrides: dict, base: Path, grid_class: type[InProcessGrid] = InProcessGrid, num_nodes: int | None = None
) -> list[Path]:
    """`run_in_process` for a federation's run config (a `replicates` file among its keys, or not);
    every replicate's results dir."""
    raw = get_fused_config_from_dir(REPO, overrides)
    states = [s for s in str(raw["states"]).split(",") if s]
    nodes = len(states) * int(raw["clients-per-state"]) if num_nodes is None else num_nodes
    return run_federation(grid_class(raw, nodes), raw, base)


@pytest.fixture
def federation():
    return run_in_process


# --- real `./run.sh run` (flwr run) runs, shared by the resume and determinism tests ----------

REAL_RUN_CONFIG = ('states="AL,CA,WY" data-source="synthetic" synthetic-rows=1500 num-server-rounds=6 '
                   'local-epochs=2 lr=0.3 batch-size=16')


def run_sh(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """`./run.sh ARGS` with this virtualenv (and `env` added to the environment)."""
    env = {**os.environ, "FAIRFL_VENV": sys.prefix, "FAIRFL_NO_REPORT": "1", **(env or {})}  # reports: one test
    return subprocess.run(["bash", str(REPO / "run.sh"), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def real_fedavg_run(tmp_path_factory) -> Path:
    """Results of one uninterrupted `./run.sh run` of REAL_RUN_CONFIG on 2 Ray actors (run.sh's default)."""
    results = tmp_path_factory.mktemp("real") / "two-actors"
    proc = run_sh("run", "--run-config", f'{REAL_RUN_CONFIG} results-dir="{results}"', env={"FAIRFL_ACTOR_CPUS": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return results


# --- test tiers: `./run.sh test --fast` runs every test not marked `live` ------------------------

# A live test starts a federation in other processes: `./run.sh run|study`, `flwr run`, a
# SuperLink with SuperNodes, or the in-process federation in a subprocess. Whole files that do
# only that, and any test whose code, or a fixture's, names one of LIVE_CALLS.
LIVE_FILES = {"test_deployment.py", "test_deployment_faults.py", "test_interrupts.py", "test_end_to_end.py",
              "test_cpu_independence.py"}
LIVE_CALLS = {"run_sh", "Popen", "killed_in_process", "study_sh", "real_fedavg_run"}


def names_in(code: types.CodeType) -> set[str]:
    """Every global, attribute and local name `code` and the functions defined in it use."""
    nested = (c for c in code.co_consts if isinstance(c, types.CodeType))
    return set(code.co_names) | set(code.co_varnames) | set().union(*map(names_in, nested))


def is_live(item: pytest.Item) -> bool:
    if Path(str(item.fspath)).name in LIVE_FILES or item.get_closest_marker("e2e"):
        return True
    functions = [item.function] + [d.func for defs in item._fixtureinfo.name2fixturedefs.values() for d in defs]
    return any(names_in(f.__code__) & LIVE_CALLS for f in functions if hasattr(f, "__code__"))


def pytest_collection_modifyitems(config, items):
    for item in items:
        if isinstance(item, pytest.Function) and is_live(item):
            item.add_marker(pytest.mark.live)


def pytest_configure(config):
    config.addinivalue_line("markers", "e2e: a real study or run through ./run.sh (slow; select with -m e2e)")
    config.addinivalue_line("markers", "live: starts a federation in other processes (set in conftest; "
                                       "./run.sh test --fast deselects these)")
    # One temporary cache for the whole session, never the user's: the controller sets it before
    # xdist starts its workers, and every subprocess (./run.sh, Flower, Ray actors) inherits it.
    # Compiled kernels stay in the user's numba cache: a fresh one makes every process compile
    # for 20-30 s, and numba keys entries by source content and CPU, so sharing changes no result.
    if "PYTEST_XDIST_WORKER" not in os.environ:
        os.environ.setdefault("NUMBA_CACHE_DIR", str(cache_root() / "numba"))
        os.environ[CACHE_ENV] = tempfile.mkdtemp(prefix="fairfl-test-cache-")


def pytest_unconfigure(config):
    if "PYTEST_XDIST_WORKER" not in os.environ:
        shutil.rmtree(os.environ[CACHE_ENV], ignore_errors=True)
