"""The real thing: `./run.sh run` drives `flwr run` on a 3-state synthetic federation."""

import json
import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import run_in_process, run_sh

REPO = Path(__file__).resolve().parent.parent
STATES = ["AL", "CA", "WY"]


@pytest.fixture(scope="module")
def fedavg_run(tmp_path_factory):
    results = tmp_path_factory.mktemp("e2e") / "fedavg"
    proc = run_sh("run", "--run-config",
                  f'states="{",".join(STATES)}" data-source="synthetic" synthetic-rows=1500 '
                  f'num-server-rounds=2 local-epochs=2 lr=0.05 results-dir="{results}"', env={"FAIRFL_NO_REPORT": "0"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return results, proc


def test_run_writes_every_contract_file(fedavg_run):
    results, _ = fedavg_run
    assert sorted(p.name for p in results.iterdir()) == ["config.json", "counts.csv", "metrics.csv", "report", "summary.json"]


def test_run_ends_with_a_report_whose_figures_exist(fedavg_run):
    results, proc = fedavg_run
    report = results / "report" / "report.md"
    figures = re.findall(r"!\[[^]]*\]\(([^)]+)\)", report.read_text())
    assert "learning_curves.png" in figures and any(f.startswith("sp_gap_map") for f in figures)
    assert all((report.parent / f).is_file() for f in figures)
    assert f"report: {report}" in proc.stderr and f"results: {results}" in proc.stdout


def test_counts_have_both_groups_of_both_attributes_per_state_and_round(fedavg_run):
    counts = pd.read_csv(fedavg_run[0] / "counts.csv")
    assert list(counts.columns) == ["round", "state", "cluster", "attribute", "group", "n", "tp", "fp", "tn", "fn"]
    assert len(counts) == 2 * len(STATES) * 4
    assert (counts["n"] == counts[["tp", "fp", "tn", "fn"]].sum(axis=1)).all()
    assert sorted(counts["state"].unique()) == STATES


def test_metrics_have_client_pooled_and_mean_rows_for_each_round(fedavg_run):
    metrics = pd.read_csv(fedavg_run[0] / "metrics.csv", keep_default_na=False)
    assert list(metrics.columns) == ["round", "state", "cluster", "attribute", "metric", "value"]
    last = metrics[metrics["round"] == 2]
    assert set(last["state"]) == {*STATES, "ALL", "MEAN"}
    pooled = last[(last["state"] == "ALL") & (last["attribute"] == "sex")]
    assert set(pooled["metric"]) == {"sp_gap", "eo_gap", "eodds_gap"}
    accuracy = float(last[(last["state"] == "ALL") & (last["metric"] == "accuracy")]["value"].iloc[0])
    assert 0.5 < accuracy <= 1.0


def test_config_records_source_versions_and_seed(fedavg_run):
    config = json.loads((fedavg_run[0] / "config.json").read_text())
    assert config["data"]["source"] == "synthetic"
    assert config["data"]["states"] == STATES
    assert config["config"]["num-server-rounds"] == 2 and config["seed"] == 0
    assert config["versions"]["flwr"] == "1.42.0" and config["versions"]["torch"].startswith("2.13.0")
    assert (config["versions"]["numba"], config["versions"]["llvmlite"]) == ("0.68.1", "0.50.0")  # they compile the kernels
    assert len(config["git_commit"]) == 40 or config["git_commit"] == "unavailable"


def test_summary_is_the_final_rounds_headline(fedavg_run):
    summary = json.loads((fedavg_run[0] / "summary.json").read_text())
    metrics = pd.read_csv(fedavg_run[0] / "metrics.csv", keep_default_na=False)
    pooled = metrics[(metrics["round"] == 2) & (metrics["state"] == "ALL") & (metrics["metric"] == "accuracy")]
    assert summary["rounds"] == 2 and summary["num_clients"] == 3
    assert summary["pooled_accuracy"] == pytest.approx(float(pooled["value"].iloc[0]))


def test_console_shows_one_line_per_round(fedavg_run):
    lines = [line for line in fedavg_run[1].stdout.splitlines() if re.search(r"\bround +\d+/2 \|", line)]
    assert [re.search(r"\bround +(\d+)/2 \|", line).group(1) for line in lines] == ["1", "2"]
    assert "mean SP gap sex" in lines[0] and re.search(r"\| elapsed \d+:\d\d, ETA \d+:\d\d$", lines[0].rstrip())
    assert lines[1].rstrip().endswith("ETA 0:00")


def test_superlink_is_stopped_after_the_run(fedavg_run):
    """Only this run's SuperLink (under its own FLWR_HOME) is looked for: other runs may share the machine."""
    _, proc = fedavg_run
    home = re.search(r"(/tmp/fairfl-flwr-\w+)/apps/", proc.stdout + proc.stderr).group(1)
    procs = subprocess.run(["pgrep", "-f", f"{home}/local-superlink"], capture_output=True, text=True)
    assert procs.stdout.strip() == ""
    assert not Path(home).exists()


def test_bad_config_fails_before_training_with_one_message(tmp_path):
    results = tmp_path / "never"
    proc = run_sh("run", "--run-config", f'task="health" results-dir="{results}"')
    assert proc.returncode == 2
    assert "unknown task 'health'; valid choices: income, employment" in proc.stderr
    assert not results.exists()


def test_missing_table_fails_before_training(tmp_path):
    results = tmp_path / "never"
    proc = run_sh("run", "--run-config", f'data-source="table" data-path="{tmp_path}/x.parquet" results-dir="{results}"')
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr and not results.exists()


PERSONALIZED = {
    "perfedavg": 'meta-lr=0.05 adapt-steps=3',
    "ditto": 'ditto-mu=0.5',
    "local": '',
    "ifca": 'warmup-rounds=1',
    "fair-ifca": 'warmup-rounds=1 lambda=0.5 fair-attribute="race" fair-metric="eodds"',
}


# Strategies whose per-client models the server keeps, and their runs below as in-process overrides.
SERVER_HELD = {"local": {"strategy": "local"}, "ditto": {"strategy": "ditto", "ditto-mu": 0.5}}
PERSONALIZED_KEYS = {"states": ",".join(STATES), "data-source": "synthetic", "synthetic-rows": 1500,
                     "num-server-rounds": 2, "local-epochs": 1, "lr": 0.05}


@pytest.mark.parametrize("strategy", sorted(PERSONALIZED))
def test_personalized_strategy_runs_through_flwr_run(strategy, tmp_path):
    results = tmp_path / strategy
    proc = run_sh("run", "--run-config",
                  f'strategy="{strategy}" states="{",".join(STATES)}" data-source="synthetic" synthetic-rows=1500 '
                  f'num-server-rounds=2 local-epochs=1 lr=0.05 results-dir="{results}" {PERSONALIZED[strategy]}')
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    counts = pd.read_csv(results / "counts.csv")
    metrics = pd.read_csv(results / "metrics.csv", keep_default_na=False)
    if strategy in ("perfedavg", "ditto"):
        assert set(counts["model"]) == {"deployed", "global"}
        assert "global_sp_gap" in set(metrics["metric"])
    elif strategy == "local":
        assert "model" not in counts and sorted(counts["state"].unique()) == STATES
    else:
        clusters = pd.read_csv(results / "clusters.csv")
        assert sorted(clusters["state"]) == STATES and set(clusters["round"]) == {2}
        assert any(s.startswith("cluster:") for s in metrics["state"])
    assert json.loads((results / "summary.json").read_text())["strategy"] == strategy
    if strategy in SERVER_HELD:  # per-client models kept by the server across rounds and Ray actors
        in_process = run_in_process({**PERSONALIZED_KEYS, **SERVER_HELD[strategy]}, tmp_path / "in-process")
        assert (results / "metrics.csv").read_text() == (in_process / "metrics.csv").read_text()
