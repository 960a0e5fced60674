"""The default experiment learns: on the bundled real sample with the default settings, FedAvg
leaves the majority class and shows the real data's fairness gaps (a shorter run than the
default 20 rounds, through the in-process federation). The employment task's default is the
real two-state sample."""

import json

import pandas as pd

from clients.sources import EMPLOYMENT_SAMPLE_PATH, SAMPLE_PATH
from fl_app import check
from tests.conftest import run_in_process

ROUNDS = 16  # the default run leaves the majority class at round 12 (docs/performance.md "A first run")


def test_fedavg_on_the_sample_beats_the_majority_class_and_shows_gaps(tmp_path):
    results = run_in_process({"data-source": "sample", "data-path": str(SAMPLE_PATH), "states": "",
                              "num-server-rounds": ROUNDS}, tmp_path / "default", num_nodes=46)
    metrics = pd.read_csv(results / "metrics.csv", keep_default_na=False)
    final = metrics[metrics["round"] == ROUNDS].set_index(["state", "attribute", "metric"])["value"]
    counts = pd.read_csv(results / "counts.csv")
    last = counts[(counts["round"] == ROUNDS) & (counts["attribute"] == "sex")]
    majority = max(last[["tp", "fn"]].to_numpy().sum(), last[["fp", "tn"]].to_numpy().sum()) / last["n"].sum()
    assert final[("ALL", "", "accuracy")] > majority + 0.03
    assert final[("MEAN", "sex", "sp_gap")] > 0.05 and final[("MEAN", "race", "sp_gap")] > 0.03
    assert json.loads((results / "config.json").read_text())["data"]["source"] == "sample"


def test_the_employment_task_runs_on_the_real_two_state_sample_by_default(tmp_path):
    results = run_in_process({"task": "employment", "num-server-rounds": 1}, tmp_path / "employment", num_nodes=2)
    data = json.loads((results / "config.json").read_text())["data"]
    assert (data["source"], data["label"], data["states"], data["input_width"]) == (
        "sample", "real, 2 states", ["MA", "WY"], 99)
    assert data["client_sizes"] == {s: {"train": 4000, "test": 1000, "val": 0} for s in ("MA", "WY")}


def test_the_pre_flight_check_announces_the_real_employment_sample(capsys):
    assert check.main(["--run-config", 'task="employment"']) == 0
    plan = json.loads(capsys.readouterr().out)
    assert (plan["num_clients"], plan["data"]) == (2, "sample (real, 2 states)")
    assert f'data-path="{EMPLOYMENT_SAMPLE_PATH}"' in plan["overrides"]
