"""Specification of the study's extra arms (the budget-matched control) and its tuning phase: planned
and labelled, the choice on validation, tuning.csv, the tuned arm on every seed, resume, bad tables."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.stats import chosen_round
from analysis.study import build_parser, main
from analysis.study_plan import build_grid, plan, unique_runs
from analysis.study_tune import choose, tuning_runs
from recorder.tables import pooled_loss
from tests.conftest import REPO
from tests.test_study import metrics, value, write_run

CONTROL = '[arms.ifca-settings]\nstrategy = "fedavg"\nlr = 0.05\nlocal-epochs = 1\n'
TUNE = '[tune]\nlr = [0.01, 0.05]\nlocal-epochs = [1, 5]\nseeds = [0, 1]\nstrategies = ["fedavg", "ifca", "fair-ifca"]\n'
COMMON = '[run-config]\ndata-source = "synthetic"\nval-rows = 50\ntrain-rows = 100\ntest-rows = 50\n'


def grid_of(tmp_path: Path, text: str, *argv: str):
    path = tmp_path / "grid.toml"
    path.write_text(text)
    return build_grid(build_parser().parse_args(["--grid", str(path), "--out", str(tmp_path / "s"), *argv]))[0]


def test_the_control_arm_is_planned_on_every_seed_with_its_keys_over_fedavgs_and_labelled(tmp_path):
    grid = grid_of(tmp_path, 'strategies = ["fedavg", "ifca"]\nseeds = 2\n' + CONTROL)
    runs = plan(grid)
    assert [(r.strategy, r.config, r.seed, r.run_dir) for r in runs] == [
        ("fedavg", "-", 0, "runs/fedavg_seed0"), ("fedavg", "ifca-settings", 0, "runs/fedavg_ifca-settings_seed0"),
        ("ifca", "-", 0, "runs/ifca_seed0"),
        ("fedavg", "-", 1, "runs/fedavg_seed1"), ("fedavg", "ifca-settings", 1, "runs/fedavg_ifca-settings_seed1"),
        ("ifca", "-", 1, "runs/ifca_seed1")]
    control, ifca = runs[1], runs[2]
    assert control.keys == {"strategy": '"fedavg"', "lr": "0.05", "local-epochs": "1", "seed": "0"}
    assert {k: control.keys[k] for k in ("lr", "local-epochs")} == {k: ifca.keys[k] for k in ("lr", "local-epochs")}


def test_the_paper_grid_has_fedavg_at_ifcas_settings_as_its_control():
    grid = build_grid(build_parser().parse_args(["--grid", str(REPO / "analysis/grids/paper.toml")]))[0]
    runs = plan(grid)
    control = next(r for r in runs if (r.strategy, r.config, r.seed) == ("fedavg", "ifca-settings", 0))
    ifca = next(r for r in runs if (r.strategy, r.config, r.seed) == ("ifca", "-", 0))
    assert (control.keys["lr"], control.keys["local-epochs"]) == (ifca.keys["lr"], ifca.keys["local-epochs"]) == (
        "0.05", "1")
    assert control.keys["num-server-rounds"] == ifca.keys["num-server-rounds"]  # the same ceiling and early stop
    assert sorted({r.seed for r in runs if r.config == "ifca-settings"}) == [0, 1, 2, 3, 4]


def test_an_explicit_default_under_a_preset_is_kept_by_spelling_the_preset_out(tmp_path):
    grid = grid_of(tmp_path, 'strategies = ["ifca"]\nseeds = 1\n[run-config]\npreset = "paper"\n'
                             '[arms.slow]\nstrategy = "ifca"\nlr = 0.001\n')
    paper, slow = plan(grid)
    assert paper.keys["preset"] == '"paper"'  # nothing to lose: unchanged
    assert "preset" not in slow.keys  # the preset would have replaced lr 0.001 (the default) by IFCA's 0.05
    assert {k: slow.keys[k] for k in ("lr", "local-epochs", "encoding", "train-rows", "test-rows", "val-rows")} == {
        "lr": "0.001", "local-epochs": "1", "encoding": '"paper"', "train-rows": "1000", "test-rows": "2000",
        "val-rows": "2000"}


def write_val(path: Path, losses: list[float]) -> None:
    """A val_metrics.csv whose pooled (ALL) loss is `losses` by round, accuracy 1 - loss."""
    rows = [[r, "ALL", "", metric, v if metric == "loss" else 1 - v] for r, v in enumerate(losses, 1)
            for metric in ("loss", "accuracy")]
    pd.DataFrame(rows, columns=["round", "state", "attribute", "metric", "value"]).to_csv(path / "val_metrics.csv",
                                                                                         index=False)


# Per (lr, local-epochs) and tuning seed: the pooled validation losses by round. Mean of the lowest:
# (0.01, 1) 0.50, (0.01, 5) 0.45, (0.05, 1) 0.40, (0.05, 5) NaN (seed 0 never finite). Seed 0 alone
# would pick (0.01, 5), seed 1 alone (0.05, 5).
LOSSES = {("0.01", "1"): ([0.6, 0.5, 0.55], [0.5, 0.5, 0.6]),
          ("0.01", "5"): ([0.5, 0.30, 0.4], [0.7, 0.6, 0.65]),
          ("0.05", "1"): ([0.5, 0.35, 0.36], [0.45, 0.46, 0.50]),
          ("0.05", "5"): ([float("nan")] * 3, [0.2, float("nan"), 0.1])}


def train_candidate(run_dir: Path, keys: dict) -> None:
    """Results of a run whose validation loss is LOSSES' for its tuning candidate and seed."""
    candidate = (str(keys["lr"]), str(keys["local-epochs"]))
    write_run(run_dir, keys["strategy"], int(keys["seed"]), float(keys.get("lambda", 0.0)), val=True)
    config = json.loads((run_dir / "config.json").read_text())
    config["config"].update({k: keys[k] for k in ("lr", "local-epochs") if k in keys})
    (run_dir / "config.json").write_text(json.dumps(config))
    if candidate in LOSSES and str(keys.get("results-dir", "")).split("/")[-1].startswith("tune-"):
        write_val(run_dir, LOSSES[candidate][int(keys["seed"])])


def test_tuning_picks_the_lowest_mean_validation_loss_and_fair_ifca_takes_ifcas_choice(tmp_path):
    grid = grid_of(tmp_path, 'strategies = ["fedavg", "ifca", "fair-ifca"]\nseeds = 3\n' + COMMON + TUNE)
    out = tmp_path / "s"
    runs = tuning_runs(grid)
    assert len(runs) == 2 * 4 * 2  # fedavg and ifca (fair-ifca takes ifca's) x 4 candidates x 2 seeds
    for run in runs:
        keys = {k: json.loads(v) for k, v in run.keys.items()}
        train_candidate(out / run.run_dir, {**keys, "results-dir": str(out / run.run_dir)})
    chosen, table = choose(out, grid, [{"run_dir": r.run_dir, "status": "completed"} for r in runs])
    assert chosen == {s: {"lr": "0.05", "local-epochs": "1"} for s in ("fedavg", "ifca", "fair-ifca")}
    fedavg = table[table["strategy"] == "fedavg"]
    assert fedavg["candidate"].tolist() == ["lr=0.01 local-epochs=1", "lr=0.01 local-epochs=5",
                                            "lr=0.05 local-epochs=1", "lr=0.05 local-epochs=5"]
    assert fedavg["val_loss"].iloc[:3].tolist() == pytest.approx([0.5, 0.45, 0.4], abs=1e-12)
    assert np.isnan(fedavg["val_loss"].iloc[3])  # a seed without a finite loss: never chosen
    assert fedavg["val_accuracy"].iloc[2] == pytest.approx(1 - 0.4)
    assert fedavg["val_rounds"].iloc[1] == "2, 2" and fedavg["val_rounds"].iloc[3] == "n/a, 3"
    assert fedavg["chosen"].tolist() == [False, False, True, False]
    assert set(fedavg["stopped"]) == {"3 plateau: made up, 3 plateau: made up"}  # write_run's summary.json


def test_a_strategy_whose_tuning_is_unfinished_gets_no_choice(tmp_path):
    grid = grid_of(tmp_path, 'strategies = ["fedavg", "ifca", "fair-ifca"]\nseeds = 1\n' + COMMON + TUNE)
    out, runs = tmp_path / "s", tuning_runs(grid)
    for run in runs:
        train_candidate(out / run.run_dir, {**{k: json.loads(v) for k, v in run.keys.items()},
                                            "results-dir": str(out / run.run_dir)})
    rows = [{"run_dir": r.run_dir, "status": "failed" if r.name == "tune-ifca_lr0.01_local-epochs1_seed1"
             else "completed"} for r in runs]
    chosen, table = choose(out, grid, rows)
    assert set(chosen) == {"fedavg"} and set(table["strategy"]) == {"fedavg"}


def test_the_tuned_arm_runs_on_every_seed_with_the_choice_and_shares_runs_equal_to_the_paper_arms(tmp_path):
    grid = grid_of(tmp_path, 'strategies = ["fedavg", "ifca", "fair-ifca"]\nseeds = 2\nlambdas = [0, 1]\n' + TUNE)
    chosen = {"fedavg": {"lr": "0.05", "local-epochs": "5"}, "ifca": {"lr": "0.05", "local-epochs": "1"},
              "fair-ifca": {"lr": "0.05", "local-epochs": "1"}}
    runs = plan(grid, chosen)
    tuned = [r for r in runs if r.config.startswith("tuned")]
    assert [(r.strategy, r.config, r.seed) for r in tuned] == [
        (s, c, seed) for seed in (0, 1) for s, c in (("fedavg", "tuned"), ("ifca", "tuned"),
                                                     ("fair-ifca", "tuned lambda=0"), ("fair-ifca", "tuned lambda=1"))]
    assert {(r.keys["lr"], r.keys["local-epochs"]) for r in tuned if r.strategy == "fedavg"} == {("0.05", "5")}
    assert [r.run_dir for r in tuned if r.strategy == "fedavg"] == ["runs/fedavg_tuned_seed0", "runs/fedavg_tuned_seed1"]
    # IFCA's choice is its paper setting: the tuned arm is the paper arm's runs (same keys, same bytes)
    assert [r.run_dir for r in tuned if r.strategy != "fedavg"] == [
        "runs/ifca_seed0", "runs/fair-ifca_lambda0_seed0", "runs/fair-ifca_lambda1_seed0",
        "runs/ifca_seed1", "runs/fair-ifca_lambda0_seed1", "runs/fair-ifca_lambda1_seed1"]
    assert len(unique_runs(runs)) == len(runs) - 6
    assert not any(r.config.startswith("tuned") for r in plan(grid))  # no choice yet: no tuned arm


def test_a_tuned_choice_equal_to_the_control_reuses_the_controls_runs(tmp_path):
    grid = grid_of(tmp_path, 'strategies = ["fedavg", "ifca"]\nseeds = 2\n' + CONTROL + TUNE.replace(', "fair-ifca"', ""))
    runs = plan(grid, {"fedavg": {"lr": "0.05", "local-epochs": "1"}, "ifca": {"lr": "0.01", "local-epochs": "5"}})
    assert [(r.strategy, r.config, r.run_dir) for r in runs if r.config == "tuned"] == [
        ("fedavg", "tuned", "runs/fedavg_ifca-settings_seed0"), ("ifca", "tuned", "runs/ifca_tuned_seed0"),
        ("fedavg", "tuned", "runs/fedavg_ifca-settings_seed1"), ("ifca", "tuned", "runs/ifca_tuned_seed1")]


def fake_trainer(monkeypatch, fail: set[str] = frozenset()):
    """run.sh stands in here for a trainer writing results like a run; returns the run dirs it trained,
    one list per federation. Runs named in `fail` fail once."""
    import analysis.study_run as study_module

    federations: list[list[str]] = []

    def fake_train(run_config: str, log: Path) -> tuple[int, str]:
        keys = dict(re.findall(r'(\S+?)=("[^"]*"|\S+)', run_config))
        federations.append([])
        code = 0
        for table in json.loads(Path(json.loads(keys["replicates"])).read_text()):
            run_dir = Path(table["results-dir"])
            if run_dir.name in fail:
                fail.discard(run_dir.name)
                code = 1
                continue
            federations[-1].append(run_dir.name)
            train_candidate(run_dir, table)
        return code, str(100 + len(federations))

    monkeypatch.setattr(study_module, "train", fake_train)
    monkeypatch.setattr(study_module, "preflight", lambda run_config: None)
    return federations


# One tuning seed: seed 0 picks lr 0.01 x 5 epochs (LOSSES), no arm's setting, so the tuned arms train.
STUDY_GRID = 'strategies = ["fedavg", "ifca"]\nseeds = 2\nout = "s"\n' + COMMON + CONTROL + TUNE.replace(
    ', "fair-ifca"', "").replace("seeds = [0, 1]", "seeds = [0]")


def test_one_command_tunes_then_runs_the_tuned_arm_and_reports_both(tmp_path, monkeypatch, capsys):
    federations = fake_trainer(monkeypatch)
    (tmp_path / "g.toml").write_text(STUDY_GRID)
    out = tmp_path / "s"
    assert main(["--grid", str(tmp_path / "g.toml"), "--out", str(out)]) == 0
    first, second = federations
    assert sorted(n for n in first if n.startswith("tune-")) == sorted(
        f"tune-{s}_lr{lr}_local-epochs{e}_seed0" for s in ("fedavg", "ifca") for lr in ("0.01", "0.05") for e in (1, 5))
    assert sorted(n for n in first if not n.startswith("tune-")) == sorted(
        f"{a}_seed{s}" for a in ("fedavg", "fedavg_ifca-settings", "ifca") for s in (0, 1))
    assert second == ["fedavg_tuned_seed0", "ifca_tuned_seed0", "fedavg_tuned_seed1", "ifca_tuned_seed1"]
    tuned = json.loads((out / "runs" / "fedavg_tuned_seed1" / "config.json").read_text())["config"]
    assert (tuned["lr"], tuned["local-epochs"]) == (0.01, 5)
    assert "tuning: fedavg runs as 'tuned' with lr=0.01 local-epochs=5" in capsys.readouterr().err
    tuning = pd.read_csv(out / "tuning.csv")
    assert tuning.loc[tuning["chosen"], "candidate"].tolist() == ["lr=0.01 local-epochs=5"] * 2
    runs = pd.read_csv(out / "runs.csv", keep_default_na=False)
    assert {"ifca-settings", "tuned", "tune lr=0.01 local-epochs=5"} <= set(runs["config"])
    assert set(runs["status"]) == {"completed"}
    summary = pd.read_csv(out / "summary.csv", keep_default_na=False)
    assert list(dict.fromkeys(zip(summary["strategy"], summary["config"]))) == [
        ("fedavg", "-"), ("fedavg", "ifca-settings"), ("fedavg", "tuned"), ("ifca", "-"), ("ifca", "tuned")]
    report = (out / "report.md").read_text()
    assert "| fedavg (ifca-settings) |" in report and "| ifca (tuned) |" in report and "## Tuning" in report


def test_the_control_claim_splits_ifca_minus_fedavg_into_clustering_and_setting(tmp_path, monkeypatch):
    fake_trainer(monkeypatch)
    (tmp_path / "g.toml").write_text(STUDY_GRID)
    out = tmp_path / "s"
    assert main(["--grid", str(tmp_path / "g.toml"), "--out", str(out)]) == 0
    claim = pd.read_csv(out / "claims.csv").iloc[6]
    assert claim["claim"].startswith("IFCA's difference from FedAvg comes from clustering")
    deltas = []
    for seed in (0, 1):
        accuracy = []
        for name in ("ifca", "fedavg_ifca-settings"):  # each at the round its pooled validation loss chose
            chosen = chosen_round(*pooled_loss(metrics(out, f"runs/{name}_seed{seed}", "val_metrics.csv")))
            accuracy.append(value(metrics(out, f"runs/{name}_seed{seed}"), chosen, "MEAN", "", "accuracy"))
        deltas.append(accuracy[0] - accuracy[1])
    # the made-up control predicts like fedavg (same strategy, seed and weight), so the setting effect is 0
    assert f"accuracy: clustering Δ {np.mean(deltas):+.3f} [" in claim["numbers"]
    assert "setting Δ +0.000 [+0.000, +0.000] over 2 seed(s): clustering" in claim["numbers"]
    assert claim["numbers"].startswith("control fedavg (ifca-settings);")


def test_a_rerun_after_the_tuning_phase_trains_only_the_tuned_arm(tmp_path, monkeypatch, capsys):
    federations = fake_trainer(monkeypatch, fail={"fedavg_tuned_seed1"})
    (tmp_path / "g.toml").write_text(STUDY_GRID)
    argv = ["--grid", str(tmp_path / "g.toml"), "--out", str(tmp_path / "s")]
    assert main(argv) == 1  # the tuned run failed
    assert federations[1] == ["fedavg_tuned_seed0", "ifca_tuned_seed0", "ifca_tuned_seed1"]
    assert main(argv) == 0
    assert federations[2:] == [["fedavg_tuned_seed1"]]  # no tuning run, no other arm
    assert main(argv) == 0
    assert len(federations) == 3 and "nothing to train" in capsys.readouterr().err


@pytest.mark.parametrize(("table", "message"), [
    ('[arms.fast]\nlr = 0.05\n', "arms.fast: 'strategy' must name a strategy, got None; valid choices: fedavg"),
    ('[arms.fast]\nstrategy = "fedprox"\nlr = 0.05\n', "arms.fast: 'strategy' must name a strategy, got 'fedprox'"),
    ('[arms.tuned]\nstrategy = "fedavg"\nlr = 0.05\n', "arms.tuned: 'tuned' is not an arm name"),
    ('[arms.fast]\nstrategy = "fedavg"\nepochs = 1\n', "arms.fast: unknown config key(s) epochs; valid keys: task"),
    ('[arms.fast]\nstrategy = "fedavg"\nseed = 1\n', "arms.fast: key(s) seed are set by the study"),
    ('[arms.fast]\nstrategy = "fedavg"\n', "arms.fast: sets no run-config key"),
    ('[arms]\nfast = 1\n', "'arms.fast' must be a table of run-config keys"),
    ('[tune]\nlr = 0.05\n', "tune: 'lr' must be a non-empty list of candidate values, got 0.05"),
    ('[tune]\nlr = [0.05, 0.05]\n', "tune: 'lr' lists a value twice"),
    ('[tune]\nlr = [[1]]\n', "tune key 'lr': [1] is not a string, number or boolean"),
    ('[tune]\nseeds = [0]\n', "tune: no run-config key to tune"),
    ('[tune]\nlr = [0.05]\nstrategies = ["fair-ifca"]\n', "fair-ifca takes the setting chosen for ifca"),
    ('[tune]\nlr = [0.05]\nseeds = 0\n', "tune: seeds: the number of seeds must be >= 1"),
])
def test_a_bad_arm_or_tune_table_is_one_message_before_anything_is_made(tmp_path, capsys, table, message):
    grid = tmp_path / "g.toml"
    grid.write_text('strategies = ["fedavg", "ifca", "fair-ifca"]\n' + COMMON + table)
    with pytest.raises(SystemExit) as exit_info:
        main(["--grid", str(grid), "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m analysis.study: error: ") and err.count("\n") == 1
    assert message in err
    assert not (tmp_path / "out").exists()


def test_tuning_without_a_validation_split_is_refused_before_training(tmp_path, capsys):
    grid = tmp_path / "g.toml"
    grid.write_text('strategies = ["fedavg"]\n[run-config]\ndata-source = "synthetic"\n[tune]\nlr = [0.01, 0.05]\n')
    with pytest.raises(SystemExit):
        main(["--grid", str(grid), "--out", str(tmp_path / "out")])
    assert "tune: fedavg has no validation split to choose on" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# --- the real thing ---------------------------------------------------------------------------------------

E2E_GRID = """strategies = ["fedavg", "ifca"]
seeds = 2
[run-config]
states = "AL,CA,WY"
data-source = "synthetic"
synthetic-rows = 400
train-rows = 200
test-rows = 100
val-rows = 100
num-server-rounds = 3
[arms.ifca-settings]
strategy = "fedavg"
lr = 0.05
local-epochs = 1
[tune]
lr = [0.01, 0.3]
local-epochs = [1]
seeds = [0]
"""


@pytest.mark.e2e
def test_a_real_study_tunes_on_validation_runs_the_choice_on_every_seed_and_resumes_without_tuning(tmp_path):
    (tmp_path / "g.toml").write_text(E2E_GRID)
    out = tmp_path / "study"
    command = ["bash", str(REPO / "run.sh"), "study", "--grid", str(tmp_path / "g.toml"), "--out", str(out)]
    env = {**os.environ, "FAIRFL_VENV": sys.prefix}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    tuning = pd.read_csv(out / "tuning.csv")
    for strategy in ("fedavg", "ifca"):
        rows = tuning[tuning["strategy"] == strategy]
        lowest = {}
        for lr in ("0.01", "0.3"):  # recomputed from the tuning run's own val_metrics.csv
            val = pd.read_csv(out / "runs" / f"tune-{strategy}_lr{lr}_local-epochs1_seed0" / "val_metrics.csv")
            lowest[lr] = val[(val["state"] == "ALL") & val["attribute"].isna() & (val["metric"] == "loss")]["value"].min()
        assert rows["val_loss"].tolist() == pytest.approx([lowest["0.01"], lowest["0.3"]], rel=1e-12)
        best = min(lowest, key=lowest.get)
        assert rows.loc[rows["chosen"], "candidate"].tolist() == [f"lr={best} local-epochs=1"]
        for seed in (0, 1):
            tuned = out / "runs" / f"{strategy}_tuned_seed{seed}"  # neither candidate is a paper setting
            assert json.loads((tuned / "config.json").read_text())["config"]["lr"] == float(best)
    runs = pd.read_csv(out / "runs.csv", keep_default_na=False)
    assert set(runs["status"]) == {"completed"}
    assert {"-", "ifca-settings", "tuned", "tune lr=0.01 local-epochs=1"} <= set(runs["config"])
    again = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "nothing to train" in again.stderr and pd.read_csv(out / "tuning.csv").equals(tuning)


def test_tuned_arms_are_compared_with_tuned_fedavg_and_judged_in_their_own_claims(tmp_path, monkeypatch):
    fake_trainer(monkeypatch)
    (tmp_path / "g.toml").write_text(STUDY_GRID)
    out = tmp_path / "s"
    assert main(["--grid", str(tmp_path / "g.toml"), "--out", str(out)]) == 0
    tests = pd.read_csv(out / "tests.csv", keep_default_na=False)
    tuned = tests[tests["baseline"] == "fedavg-tuned"]
    assert set(zip(tuned["strategy"], tuned["config"])) == {("ifca", "tuned")}  # only tuned arms, each at its best
    expected = []
    for seed in (0, 1):
        values = []
        for name in (f"ifca_tuned_seed{seed}", f"fedavg_tuned_seed{seed}"):
            chosen = chosen_round(*pooled_loss(metrics(out, f"runs/{name}", "val_metrics.csv")))
            frame = metrics(out, f"runs/{name}")
            values.append(np.array([value(frame, chosen, state, "", "accuracy") for state in ("AL", "WY", "VT")]))
        expected.append(values[0] - values[1])
    row = tuned[tuned["metric"] == "accuracy"].iloc[0]
    per_state = pd.read_csv(out / "state_deltas.csv", keep_default_na=False)
    mine = per_state[(per_state["baseline"] == "fedavg-tuned") & (per_state["metric"] == "accuracy")
                     & per_state["state"].isin(["AL", "WY", "VT"])].set_index("state")["delta"]
    assert mine[["AL", "WY", "VT"]].to_numpy() == pytest.approx(np.mean(expected, axis=0), abs=1e-12)
    assert row["n_seeds"] == 2
    claims = pd.read_csv(out / "claims.csv")
    assert claims["claim"].iloc[7:].tolist() == ["Personalization improves local accuracy (tuned arms)",
                                                 "Personalization improves local fairness (tuned arms)"]
    assert "ifca (tuned) accuracy Δ" in claims["numbers"].iloc[7]
    assert "(tuned)" not in claims["numbers"].iloc[0]  # the paper-settings claim keeps to paper-settings arms
