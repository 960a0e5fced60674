"""The default experiment learns: on the bundled real sample with the default settings, FedAvg
leaves the majority class and shows the real data's fairness gaps (a shorter run than the
default 20 rounds, through the in-process federation)."""

import json

import pandas as pd

from clients.sources import SAMPLE_PATH
from tests.conftest import run_in_process

ROUNDS = 16  # the default run leaves the majority class at round 12 (README "Quick start")


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
