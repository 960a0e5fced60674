"""Centralized training: one model on the pooled training splits, evaluated by the clients."""

import json
from functools import partial

import numpy as np
import pandas as pd
import pytest

from clients.data import Split, state_data
from clients.kernels import sparse_from_dense, train_sgd
from clients.local import evaluate_local
from clients.shards import ClientId
from clients.sources import Source
from core.params import init_params
from core.rounds import RoundHealth
from core.tasks import task_for
from fl_app.config import parse_config
from recorder.checkpoint import CHECKPOINT_FILE
from strategies.algorithm import ServerSetup
from strategies.centralized import Centralized, central_rng, pooled_split
from tests.conftest import InProcessGrid, run_in_process, run_sh
from tests.test_resume import killed_in_process

STATES = ("AL", "CA", "WY")
SETTINGS = {"strategy": "centralized", "states": ",".join(STATES), "data-source": "synthetic", "synthetic-rows": 600,
            "num-server-rounds": 2, "local-epochs": 2, "lr": 0.05, "batch-size": 16}


def split(values: list[float], group: int) -> Split:
    return Split(np.array([[v] for v in values], np.float32), (np.array(values) > 0).astype(np.float32),
                 {"sex": np.full(len(values), group), "race": np.zeros(len(values), int)})


def test_the_pool_concatenates_the_splits_in_order():
    pooled = pooled_split([split([1.0, 0.0], 0), split([2.0], 1)])
    assert pooled.x[:, 0].tolist() == [1.0, 0.0, 2.0] and pooled.y.tolist() == [1.0, 0.0, 1.0]
    assert pooled.groups["sex"].tolist() == [0, 0, 1] and pooled.groups["race"].tolist() == [0, 0, 0]


def test_the_batch_order_depends_on_seed_and_round_only():
    draws = {(s, r): central_rng(s, r).permutation(50).tolist() for s in (0, 1) for r in (1, 2)}
    assert draws[0, 1] == central_rng(0, 1).permutation(50).tolist()
    assert len({tuple(d) for d in draws.values()}) == 4


def client_splits(seed: int = 0) -> list:
    """Each state's data exactly as its ClientApp builds it."""
    source = Source("synthetic", "", STATES)
    return [state_data(source, "income", ClientId(s), seed, SETTINGS["synthetic-rows"]) for s in STATES]


def expected_model(rounds: int) -> dict:
    """SGD on the concatenated training splits, round by round with the (seed, round) batch order."""
    task = task_for("income", "grouped")
    data = client_splits()
    x = np.concatenate([d.train.x for d in data])
    y = np.concatenate([d.train.y for d in data])
    model = init_params(task.width, task.hidden, 0)
    for r in range(1, rounds + 1):
        model, _ = train_sgd(model, sparse_from_dense(x, y), lr=0.05, epochs=2, batch_size=16,
                             rng=np.random.default_rng([0, 90, r]))
    return model


def test_a_round_is_sgd_on_the_concatenated_training_splits():
    config = parse_config(SETTINGS)
    task = task_for("income", "grouped")
    algorithm = Centralized(ServerSetup(config, STATES, Source("synthetic", "", STATES),
                                        partial(init_params, task.width, task.hidden)))
    for r in (1, 2):
        assert algorithm.train_request(r, [0, 1, 2]) is None
        assert algorithm.train_done(r, [], RoundHealth()) is None
    expected = expected_model(2)
    for key, value in expected.items():
        assert np.array_equal(algorithm.state()[0][key], value), key


class RecordingGrid(InProcessGrid):
    sent: list[str] = []

    def send_and_receive(self, messages, *, timeout=None):
        RecordingGrid.sent += [m.metadata.message_type for m in messages]
        return super().send_and_receive(messages, timeout=timeout)


@pytest.fixture(scope="module")
def centralized_run(tmp_path_factory):
    RecordingGrid.sent = []
    results = run_in_process(SETTINGS, tmp_path_factory.mktemp("central") / "r", grid_class=RecordingGrid)
    return results, list(RecordingGrid.sent)


def test_no_client_is_sent_a_training_message(centralized_run):
    _, sent = centralized_run
    assert sorted(set(sent)) == ["evaluate", "query.identify"] and sent.count("evaluate") == 2 * len(STATES)


def test_clients_evaluate_the_centralized_model_on_their_own_test_split(centralized_run):
    counts = pd.read_csv(centralized_run[0] / "counts.csv")
    model = expected_model(2)
    for index, data in enumerate(client_splits()):
        ev = evaluate_local(model, data.test, index)
        rows = counts[(counts["round"] == 2) & (counts["state"] == STATES[index]) & (counts["attribute"] == "sex")]
        assert rows[["tp", "fp", "tn", "fn"]].to_numpy().tolist() == ev.counts["sex"].tolist()


def health(metrics: pd.DataFrame, metric: str) -> list[float]:
    """Per round, the ALL row of one failure count."""
    return metrics[(metrics["state"] == "ALL") & (metrics["metric"] == metric)]["value"].astype(float).tolist()


def client_rows(results, states) -> pd.DataFrame:
    metrics = pd.read_csv(results / "metrics.csv", keep_default_na=False)
    return metrics[metrics["state"].isin(states)].reset_index(drop=True)


def test_a_client_failing_evaluation_is_counted_and_changes_nobody_elses_rows(centralized_run, federation, tmp_path):
    results = federation({**SETTINGS, "fail-states": "CA", "fail-mode": "evaluate-error"}, tmp_path / "r")
    metrics = pd.read_csv(results / "metrics.csv", keep_default_na=False)
    assert health(metrics, "failed_evaluations") == [1.0, 1.0] and "CA" not in set(metrics["state"])
    pd.testing.assert_frame_equal(client_rows(results, ["AL", "WY"]), client_rows(centralized_run[0], ["AL", "WY"]))


def test_a_training_fault_has_nothing_to_break(centralized_run, federation, tmp_path):
    results = federation({**SETTINGS, "fail-states": "CA"}, tmp_path / "r")
    assert (results / "metrics.csv").read_text() == (centralized_run[0] / "metrics.csv").read_text()


RESUMED = {**SETTINGS, "num-server-rounds": 3}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    return run_in_process(RESUMED, tmp_path_factory.mktemp("central-whole") / "r")


@pytest.mark.parametrize(("name", "nth"), [
    ("metrics.csv", 2),      # round 2 half written: resumes after round 1
    (CHECKPOINT_FILE, 3),    # round 3 written, its checkpoint not: resumes after round 2
])
def test_a_killed_centralized_run_resumes_to_the_uninterrupted_results(name, nth, uninterrupted, federation, tmp_path):
    whole, results = uninterrupted, tmp_path / "r"
    killed_in_process(RESUMED, results, name, nth)
    federation({**RESUMED, "resume": str(results)}, results)
    for file in ("metrics.csv", "counts.csv"):
        assert (results / file).read_text() == (whole / file).read_text(), file
    assert sorted(p.name for p in results.iterdir()) == sorted(p.name for p in whole.iterdir())


def test_centralized_runs_through_flwr_run(tmp_path):
    results = tmp_path / "centralized"
    proc = run_sh("run", "--run-config",
                  f'strategy="centralized" states="{",".join(STATES)}" data-source="synthetic" synthetic-rows=1500 '
                  f'num-server-rounds=2 local-epochs=1 lr=0.05 results-dir="{results}"')
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert sorted(p.name for p in results.iterdir()) == ["config.json", "counts.csv", "metrics.csv", "summary.json"]
    counts = pd.read_csv(results / "counts.csv")
    assert sorted(counts["state"].unique()) == list(STATES) and set(counts["round"]) == {1, 2}
    metrics = pd.read_csv(results / "metrics.csv", keep_default_na=False)
    assert health(metrics, "failed_clients") == [0.0, 0.0]
    assert json.loads((results / "summary.json").read_text())["strategy"] == "centralized"
