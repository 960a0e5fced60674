"""Flower's built-in strategies run unchanged behind the fairness hook (`strategy="flwr:<Name>"`)."""

import numpy as np
import pandas as pd
import pytest
from flwr.app import Message, MetricRecord, RecordDict
from flwr.serverapp import strategy as flower_strategies
from flwr.supercore.task_identity import TaskIdentity

from core.params import from_record, init_params, to_record
from core.wire import CLIENT_KEY
from strategies.aggregation import weighted_average
from strategies.flower import NAMES
from tests.conftest import run_in_process, run_sh

SETTINGS = {"states": "AL,CA,WY", "data-source": "synthetic", "synthetic-rows": 1000, "num-server-rounds": 3,
            "local-epochs": 2, "lr": 0.3, "batch-size": 16}


def reply(params, n: int, client: int) -> Message:
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    metrics = MetricRecord({CLIENT_KEY: client, "num-examples": n})
    return Message(RecordDict({"arrays": to_record(params), "metrics": metrics}), dst_node_id=1, message_type="train")


def test_flower_fedavg_aggregation_equals_ours_within_float32_rounding():
    models = [init_params(101, 32, seed) for seed in range(3)]
    ours = weighted_average(models, [100, 250, 40])
    replies = [reply(m, n, i) for i, (m, n) in enumerate(zip(models, (100, 250, 40)))]
    theirs, _ = flower_strategies.FedAvg().aggregate_train(1, replies)
    for key, value in from_record(theirs).items():
        np.testing.assert_allclose(value, ours[key], rtol=0, atol=1e-6)


def test_flwr_fedavg_gives_fedavgs_results(tmp_path):
    """Flower sums in float32, we in float64: the metrics agree to 1e-6 (here: exactly, counts are integers)."""
    ours = pd.read_csv(run_in_process({**SETTINGS, "strategy": "fedavg"}, tmp_path / "ours") / "metrics.csv")
    theirs = pd.read_csv(run_in_process({**SETTINGS, "strategy": "flwr:FedAvg"}, tmp_path / "flwr") / "metrics.csv")
    pd.testing.assert_frame_equal(ours.drop(columns="value"), theirs.drop(columns="value"))
    np.testing.assert_allclose(theirs["value"], ours["value"], rtol=0, atol=1e-6)


def test_flwr_fedprox_trains_closer_to_the_global_model_than_fedavg(tmp_path):
    fedavg = pd.read_csv(run_in_process({**SETTINGS, "strategy": "flwr:FedAvg"}, tmp_path / "a") / "metrics.csv")
    prox_run = run_in_process({**SETTINGS, "strategy": "flwr:FedProx", "proximal-mu": 5.0}, tmp_path / "b")
    prox = pd.read_csv(prox_run / "metrics.csv")
    assert not np.allclose(prox["value"].dropna(), fedavg["value"].dropna())


def test_a_rejected_update_never_reaches_the_flower_strategy(tmp_path):
    metrics = pd.read_csv(run_in_process({**SETTINGS, "strategy": "flwr:FedMedian", "fail-states": "CA",
                                          "fail-mode": "nan-update"}, tmp_path / "r") / "metrics.csv")
    rejected = metrics[(metrics["state"] == "ALL") & (metrics["metric"] == "rejected_updates")]["value"]
    assert list(rejected) == [1.0, 1.0, 1.0]
    assert metrics[metrics["metric"] == "accuracy"]["value"].notna().all()


@pytest.mark.parametrize("name", ["flwr:FedAvgM", "flwr:FedAdam"])
def test_resuming_a_stateful_flower_strategy_is_refused_before_training(name, tmp_path):
    with pytest.raises(ValueError, match="keeps server optimiser state"):
        run_in_process({**SETTINGS, "strategy": name, "resume": str(tmp_path / "old")}, tmp_path / "old")


def test_every_listed_flower_strategy_completes_a_round(tmp_path):
    for name in NAMES:
        extra = {"num-malicious": 0} if "Krum" in name or "Bulyan" in name else {}
        results = run_in_process({**SETTINGS, "num-server-rounds": 1, "local-epochs": 1, "strategy": name, **extra},
                                 tmp_path / name.replace(":", "-"))
        assert (results / "summary.json").exists(), name


@pytest.mark.parametrize("name, keys", [("flwr:FedProx", "proximal-mu=0.1"), ("flwr:FedAdam", "server-lr=0.01")])
def test_flower_strategy_completes_a_real_flwr_run(name, keys, tmp_path):
    results = tmp_path / "run"
    proc = run_sh("run", "--run-config", f'strategy="{name}" states="AL,CA,WY" data-source="synthetic" synthetic-rows=600 '
                  f'num-server-rounds=2 local-epochs=1 lr=0.1 {keys} results-dir="{results}"')
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    metrics = pd.read_csv(results / "metrics.csv", keep_default_na=False)
    assert set(metrics[metrics["state"] != "ALL"]["state"]) >= {"AL", "CA", "WY", "MEAN"}
    assert sorted(set(metrics["round"])) == [1, 2]
