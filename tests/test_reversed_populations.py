"""Personalization that personalizes: when half the clients' labels follow the reversed rule,
one averaged model serves that half badly, and local training, Ditto's personal models and
Per-FedAvg's adapted models serve it far better (in-process federations, seed 0)."""

import pandas as pd
import pytest

from tests.conftest import run_in_process

NORMAL, REVERSED = ["ND", "OH"], ["MD", "SD"]
SETTINGS = {"states": ",".join(sorted(NORMAL + REVERSED)), "synthetic-reversed": ",".join(REVERSED),
            "data-source": "synthetic", "synthetic-rows": 1500, "lr": 0.3, "local-epochs": 5, "num-server-rounds": 4}
# Per-FedAvg with its outer step equal to the inner one, adapting for one epoch of the 1,200
# training records (38 batches of 32) at the same step size.
RUNS = {"fedavg": {}, "local": {}, "ditto": {},
        "perfedavg": {"meta-lr": 0.3, "adapt-lr": 0.3, "adapt-steps": 38}}


@pytest.fixture(scope="module")
def accuracy(tmp_path_factory) -> dict[str, pd.DataFrame]:
    """Per strategy, the last round's per-state accuracy of the deployed and the global model."""
    out = {}
    for strategy, keys in RUNS.items():
        results = run_in_process({**SETTINGS, "strategy": strategy, **keys}, tmp_path_factory.mktemp(strategy) / "r")
        metrics = pd.read_csv(results / "metrics.csv", keep_default_na=False)
        last = metrics[(metrics["round"] == 4) & metrics["metric"].isin(["accuracy", "global_accuracy"])]
        out[strategy] = last.pivot_table(index="state", columns="metric", values="value", aggfunc="first")
    return out


def reversed_mean(table: pd.DataFrame, metric: str = "accuracy") -> float:
    return float(table.loc[REVERSED, metric].mean())


def test_fedavg_serves_the_reversed_half_barely_better_than_a_coin(accuracy):
    assert reversed_mean(accuracy["fedavg"]) < 0.60  # measured 0.5804


def test_local_training_serves_the_reversed_half_far_better_than_fedavg(accuracy):
    assert reversed_mean(accuracy["local"]) >= reversed_mean(accuracy["fedavg"]) + 0.10  # measured +0.131


def test_dittos_personal_models_serve_the_reversed_half_better_than_its_global_model(accuracy):
    ditto = accuracy["ditto"]
    assert reversed_mean(ditto) >= reversed_mean(ditto, "global_accuracy") + 0.08  # measured +0.104
    assert reversed_mean(ditto) >= reversed_mean(accuracy["fedavg"]) + 0.08  # its global model is FedAvg's


def test_per_fedavgs_adapted_models_serve_the_reversed_half_better_than_its_global_model(accuracy):
    perfedavg = accuracy["perfedavg"]
    assert reversed_mean(perfedavg) >= reversed_mean(perfedavg, "global_accuracy") + 0.1  # measured +0.147
    assert reversed_mean(perfedavg) >= reversed_mean(accuracy["fedavg"]) + 0.1  # measured +0.128
