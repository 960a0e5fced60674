"""Failing clients and bad updates: left out, counted, never averaged; the round completes anyway."""

import numpy as np
import pandas as pd
import pytest
from flwr.app import MetricRecord

from clients.local import UPDATE_FAULTS, corrupt_update, fault_strikes
from clients.shards import ClientId
from core.params import init_params
from core.states import FOLKTABLES_STATES
from strategies.ifca import cluster_reply_problem
from strategies.replies import update_problem
from tests.conftest import run_in_process

SHAPES = {k: v.shape for k, v in init_params(6, 4, 0).items()}
STATES = ["AL", "CA", "WY"]
SETTINGS = {"states": ",".join(STATES), "data-source": "synthetic", "synthetic-rows": 1500,
            "num-server-rounds": 2, "local-epochs": 2, "lr": 0.3, "batch-size": 16}


def read_metrics(results):
    return pd.read_csv(results / "metrics.csv", keep_default_na=False)


def health(metrics: pd.DataFrame, metric: str) -> list[float]:
    """Per round, the ALL row of one failure count."""
    return metrics[(metrics["state"] == "ALL") & (metrics["metric"] == metric)].sort_values("round")["value"].tolist()


def state_rows(metrics: pd.DataFrame, states: list[str]) -> pd.DataFrame:
    return metrics[metrics["state"].isin(states)].reset_index(drop=True)


# --- which clients fail: deterministic by (seed, state, round) ---------------------------------

def test_fault_draws_repeat_for_the_same_seed_state_and_round():
    draws = [[fault_strikes(3, ClientId(s), r, (), 0.5) for s in FOLKTABLES_STATES for r in range(1, 6)] for _ in range(2)]
    assert draws[0] == draws[1]


def test_fault_draws_change_with_the_seed():
    draws = {seed: [fault_strikes(seed, ClientId(s), 1, (), 0.5) for s in FOLKTABLES_STATES] for seed in (0, 1)}
    assert draws[0] != draws[1]


def test_fail_prob_is_the_share_of_failing_client_rounds():
    strikes = [fault_strikes(0, ClientId(s), r, (), 0.3) for s in FOLKTABLES_STATES for r in range(1, 41)]
    assert np.mean(strikes) == pytest.approx(0.3, abs=0.03)


def test_listed_states_fail_every_round_and_others_never_at_zero_prob():
    assert [fault_strikes(0, ClientId(s), r, ("CA",), 0.0) for s in ("CA", "AL") for r in (1, 2)] == [True, True, False, False]


# --- what the server rejects --------------------------------------------------------------------

def test_a_well_formed_update_has_no_problem():
    assert update_problem(init_params(6, 4, 1), SHAPES) is None


@pytest.mark.parametrize(("mode", "problem"), [
    ("nan-update", "'fc1.weight' holds non-finite values"),
    ("shape-update", "'fc1.weight' has shape (3, 6), expected (4, 6)"),
    ("keys-update", "parameter keys differ from the model's (missing ['fc1.weight'], unexpected ['fc1.weight.renamed'])"),
])
def test_each_corrupt_update_is_named_by_its_problem(mode, problem):
    assert update_problem(corrupt_update(init_params(6, 4, 1), mode), SHAPES) == problem


def test_an_infinite_value_is_rejected():
    params = init_params(6, 4, 1)
    params["fc2.bias"] = np.array([np.inf], dtype=np.float32)
    assert update_problem(params, SHAPES) == "'fc2.bias' holds non-finite values"


def test_integer_arrays_are_rejected():
    params = init_params(6, 4, 1)
    params["fc2.bias"] = np.array([1], dtype=np.int64)
    assert update_problem(params, SHAPES) == "'fc2.bias' has dtype int64, expected a float type"


@pytest.mark.parametrize(("metrics", "problem"), [
    ({"cluster": 2, "losses": [0.1, 0.2]}, "cluster 2 is not one of 0..1"),
    ({"cluster": 1, "losses": [0.1]}, "losses must list one value per cluster (2), got [0.1]"),
    ({"losses": [0.1, 0.2]}, "missing metric 'cluster'"),
])
def test_ifca_rejects_an_unusable_cluster_choice(metrics, problem):
    assert cluster_reply_problem(MetricRecord(metrics), k=2) == problem


# --- whole rounds with failing clients (in-process federation) ----------------------------------

@pytest.fixture(scope="module")
def without_ca(tmp_path_factory):
    """FedAvg on AL and WY only: what the others learn when CA contributes nothing."""
    return read_metrics(run_in_process({**SETTINGS, "states": "AL,WY"}, tmp_path_factory.mktemp("faults") / "r"))


def test_a_client_raising_in_training_is_left_out_and_counted(federation, tmp_path, without_ca):
    metrics = read_metrics(federation({**SETTINGS, "fail-states": "CA"}, tmp_path / "r"))
    assert health(metrics, "failed_clients") == [1.0, 1.0]
    pd.testing.assert_frame_equal(state_rows(metrics, ["AL", "WY"]), state_rows(without_ca, ["AL", "WY"]))


@pytest.mark.parametrize("mode", UPDATE_FAULTS)
def test_a_bad_update_is_rejected_counted_and_never_averaged(mode, federation, tmp_path, without_ca):
    metrics = read_metrics(federation({**SETTINGS, "fail-states": "CA", "fail-mode": mode}, tmp_path / "r"))
    assert (health(metrics, "rejected_updates"), health(metrics, "failed_clients")) == ([1.0, 1.0], [0.0, 0.0])
    pd.testing.assert_frame_equal(state_rows(metrics, ["AL", "WY"]), state_rows(without_ca, ["AL", "WY"]))


def test_a_round_without_usable_updates_keeps_the_model_and_says_so(federation, tmp_path, caplog):
    metrics = read_metrics(federation({**SETTINGS, "fail-states": ",".join(STATES)}, tmp_path / "r"))
    rounds = [state_rows(metrics[metrics["round"] == r], STATES).drop(columns="round") for r in (1, 2)]
    pd.testing.assert_frame_equal(rounds[0], rounds[1])
    assert caplog.text.count("no usable update: previous model kept") == 2


def test_a_client_failing_in_evaluation_loses_its_rows_for_the_round(federation, tmp_path):
    results = federation({**SETTINGS, "fail-states": "CA", "fail-mode": "evaluate-error"}, tmp_path / "r")
    metrics, counts = read_metrics(results), pd.read_csv(results / "counts.csv")
    assert health(metrics, "failed_evaluations") == [1.0, 1.0]
    assert sorted(counts["state"].unique()) == ["AL", "WY"]
    assert "CA" not in set(metrics["state"])


def test_a_round_nobody_evaluates_still_completes(federation, tmp_path):
    results = federation({**SETTINGS, "fail-prob": 1.0, "fail-mode": "evaluate-error"}, tmp_path / "r")
    metrics = read_metrics(results)
    assert set(metrics["state"]) == {"ALL"} and health(metrics, "failed_evaluations") == [3.0, 3.0]
    assert (results / "summary.json").exists() and not (results / "counts.csv").exists()


def test_failure_counts_follow_the_seeded_draws(federation, tmp_path):
    settings = {**SETTINGS, "num-server-rounds": 4, "fail-prob": 0.5, "seed": 1}
    metrics = read_metrics(federation(settings, tmp_path / "r"))
    expected = [float(sum(fault_strikes(1, ClientId(s), r, (), 0.5) for s in STATES)) for r in range(1, 5)]
    assert health(metrics, "failed_clients") == expected and 0 < sum(expected) < 12


def test_the_console_line_counts_failures(federation, tmp_path, caplog):
    federation({**SETTINGS, "num-server-rounds": 1, "fail-states": "CA,WY"}, tmp_path / "r")
    line = next(line for line in caplog.text.splitlines() if "round   1/1 |" in line)
    assert "| failed 2 rejected 0 eval-failed 0 |" in line


IFCA = {"states": "AL,CA,OH,TX,VT,WA", "synthetic-reversed": "TX,VT,WA", "data-source": "synthetic",
        "synthetic-rows": 2000, "lr": 0.1, "local-epochs": 2, "num-server-rounds": 4, "warmup-rounds": 1,
        "strategy": "ifca", "fail-prob": 0.4, "seed": 2}


def test_a_failed_ifca_client_keeps_its_previous_cluster(federation, tmp_path):
    results = federation(IFCA, tmp_path / "r")
    clusters = pd.read_csv(results / "clusters.csv")
    metrics = read_metrics(results)
    accuracy = metrics[metrics["metric"] == "accuracy"].set_index(["round", "state"])["cluster"]
    last_joined, checked = {}, 0
    for r in range(2, 5):
        for state in IFCA["states"].split(","):
            failed = fault_strikes(2, ClientId(state), r, (), 0.4)
            joined = clusters[(clusters["round"] == r) & (clusters["state"] == state)]["cluster"].tolist()
            assert len(joined) == (0 if failed else 1)
            if joined:
                last_joined[state] = joined[0]
            elif state in last_joined:
                assert int(accuracy[(r, state)]) == last_joined[state]
                checked += 1
    assert checked > 0
