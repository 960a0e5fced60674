"""Ditto: FedAvg's global model, and a personal model per client trained with a proximal term
towards the global model it received; the personal model is deployed."""

from functools import partial

import numpy as np
import pandas as pd
import pytest
from flwr.app import MetricRecord

from clients import kernels
from clients.data import ClientSplit
from clients.local import ditto_personal_step, fault_strikes
from clients.shards import ClientId
from clients.sources import Source
from core.params import init_params
from fl_app.config import parse_config
from strategies.algorithm import ServerSetup
from strategies.ditto import Ditto, both_models
from strategies.replies import Update
from tests.conftest import run_in_process

STATES = ("AL", "CA", "WY")
SETTINGS = {"strategy": "ditto", "states": ",".join(STATES), "data-source": "synthetic", "synthetic-rows": 1500,
            "num-server-rounds": 3, "local-epochs": 2, "lr": 0.3, "batch-size": 16}


def dense_split(x: np.ndarray, y: np.ndarray) -> ClientSplit:
    """Any dense matrix as a client split: one single-column feature per input column."""
    rows = np.arange(len(y))
    return ClientSplit(kernels.sparse_from_tables([x[:, [j]] for j in range(x.shape[1])], [rows] * x.shape[1], y), {})


def test_the_personal_step_is_sgd_on_the_loss_plus_the_proximal_term():
    """One step on four rows, by hand: grad of mean BCE through Linear-ReLU-Linear, plus mu (v - w)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 3)).astype(np.float32)
    y = np.array([1, 0, 1, 0], np.float32)
    v, w = init_params(3, 2, 0), init_params(3, 2, 1)
    mu, lr = 0.5, 0.1
    got, _ = ditto_personal_step(v, w, dense_split(x, y), mu=mu, lr=lr, epochs=1, batch_size=4,
                                 rng=np.random.default_rng(0))

    v64 = {k: a.astype(np.float64) for k, a in v.items()}
    z = x @ v64["fc1.weight"].T + v64["fc1.bias"]
    a = np.maximum(z, 0.0)
    logit = a @ v64["fc2.weight"][0] + v64["fc2.bias"][0]
    dlogit = (1 / (1 + np.exp(-logit)) - y) / 4
    dz = np.outer(dlogit, v64["fc2.weight"][0]) * (z > 0)
    grads = {"fc1.weight": dz.T @ x, "fc1.bias": dz.sum(0), "fc2.weight": (dlogit @ a)[None, :],
             "fc2.bias": np.array([dlogit.sum()])}
    for key in v:
        expected = v64[key] - lr * (grads[key] + mu * (v64[key] - w[key]))
        np.testing.assert_allclose(got[key], expected, rtol=1e-5, atol=1e-6)


def test_with_mu_zero_the_personal_step_ignores_the_global_model():
    data = dense_split(np.ones((8, 3), np.float32), np.ones(8, np.float32))
    v = init_params(3, 2, 0)
    steps = [ditto_personal_step(v, init_params(3, 2, s), data, mu=0.0, lr=0.1, epochs=1, batch_size=4,
                                 rng=np.random.default_rng(0))[0] for s in (1, 2)]
    assert all(np.array_equal(steps[0][k], steps[1][k]) for k in v)


def server() -> Ditto:
    config = parse_config({"strategy": "ditto", "seed": 3})
    return Ditto(ServerSetup(config, STATES, Source("synthetic", "", STATES), partial(init_params, 6, 4)))


def update(client: int, global_seed: int, personal_seed: int, weight: float) -> Update:
    return Update(client, both_models(init_params(6, 4, global_seed), init_params(6, 4, personal_seed)), weight,
                  MetricRecord({}))


def test_the_server_averages_the_global_halves_and_keeps_each_personal_half():
    algorithm = server()
    algorithm.aggregate(1, [update(0, 10, 20, 1.0), update(2, 12, 22, 3.0)])  # client 1 failed
    sent = [algorithm.train_payload(2, c).arrays for c in range(3)]
    for key, value in init_params(6, 4, 3).items():
        average = 0.25 * init_params(6, 4, 10)[key] + 0.75 * init_params(6, 4, 12)[key]
        assert all(np.allclose(s[f"global.{key}"], average, atol=1e-7) for s in sent)
        assert np.array_equal(sent[0][f"personal.{key}"], init_params(6, 4, 20)[key])
        assert np.array_equal(sent[1][f"personal.{key}"], value)  # the initial model, kept
        assert np.array_equal(sent[2][f"personal.{key}"], init_params(6, 4, 22)[key])


def test_the_checkpoint_state_restores_both_models():
    algorithm = server()
    algorithm.aggregate(1, [update(0, 10, 20, 1.0), update(1, 11, 21, 1.0)])
    fresh = server()
    fresh.restore(*algorithm.state())
    for c in range(3):
        a, b = algorithm.train_payload(2, c).arrays, fresh.train_payload(2, c).arrays
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def read_metrics(results) -> pd.DataFrame:
    return pd.read_csv(results / "metrics.csv", keep_default_na=False)


def client_rows(metrics: pd.DataFrame, prefix: str) -> pd.DataFrame:
    """Per-client rows of the metrics with `prefix` (prefix stripped), for comparing runs."""
    rows = metrics[metrics["state"].isin(STATES) & metrics["metric"].str.startswith(prefix)].copy()
    rows["metric"] = rows["metric"].str.removeprefix(prefix)
    return rows.reset_index(drop=True)


@pytest.fixture(scope="module")
def ditto_run(tmp_path_factory):
    return read_metrics(run_in_process(SETTINGS, tmp_path_factory.mktemp("ditto") / "r"))


def test_the_global_model_is_fedavgs_bit_for_bit(ditto_run, federation, tmp_path):
    fedavg = read_metrics(federation({**SETTINGS, "strategy": "fedavg"}, tmp_path / "fedavg"))
    pd.testing.assert_frame_equal(client_rows(ditto_run, "global_"), client_rows(fedavg, ""))


def test_with_mu_zero_the_deployed_model_is_locals(federation, tmp_path):
    ditto = read_metrics(federation({**SETTINGS, "ditto-mu": 0.0}, tmp_path / "ditto"))
    local = read_metrics(federation({**SETTINGS, "strategy": "local"}, tmp_path / "local"))
    deployed = client_rows(ditto, "")
    pd.testing.assert_frame_equal(deployed[~deployed["metric"].str.startswith("global_")].reset_index(drop=True),
                                  client_rows(local, ""))


def test_the_personal_model_is_deployed_and_the_global_one_reported(ditto_run):
    assert {"accuracy", "global_accuracy", "sp_gap", "global_sp_gap"} <= set(ditto_run[ditto_run["state"] == "CA"]["metric"])
    deployed = client_rows(ditto_run, "")
    assert not deployed[deployed["metric"] == "accuracy"]["value"].equals(
        client_rows(ditto_run, "global_").query("metric == 'accuracy'")["value"])


@pytest.mark.parametrize("mode", ["train-error", "nan-update"])
def test_a_failing_client_keeps_its_personal_model_and_is_counted(mode, federation, tmp_path):
    settings = {**SETTINGS, "num-server-rounds": 4, "fail-prob": 0.4, "seed": 2, "fail-mode": mode}
    metrics = read_metrics(federation(settings, tmp_path / "r"))
    personal = client_rows(metrics, "")
    personal = personal[~personal["metric"].str.startswith("global_")]
    values = personal.set_index(["round", "state", "attribute", "metric"])["value"]
    failed = {(r, s): fault_strikes(2, ClientId(s), r, (), 0.4) for r in range(1, 5) for s in STATES}
    kept = [(r, s) for (r, s), strikes in failed.items() if strikes and r > 1]
    assert kept and all(values.xs((r, s)).equals(values.xs((r - 1, s))) for r, s in kept)
    count = "failed_clients" if mode == "train-error" else "rejected_updates"
    counted = metrics[(metrics["state"] == "ALL") & (metrics["metric"] == count)].sort_values("round")["value"]
    assert counted.tolist() == [float(sum(failed[r, s] for s in STATES)) for r in range(1, 5)]
