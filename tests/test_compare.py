"""Specification of the per-state comparison of a strategy against FedAvg and against local."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from analysis.compare import (
    COMPARE_COLUMNS,
    ResultsError,
    RunResults,
    compare_columns,
    compare_runs,
    gain_loss_summary,
    main,
)
from core.tasks import ATTRIBUTES
from recorder.files import COUNTS_COLUMNS, METRICS_COLUMNS

NAN = math.nan
# state -> (accuracy, sp_gap sex, sp_gap race) at the final round (2); other gaps are 0.1 everywhere.
FEDAVG = {"AA": (0.70, 0.20, 0.30), "BB": (0.80, 0.10, 0.30), "CC": (0.60, NAN, 0.30)}
IFCA = {"AA": (0.75, 0.10, 0.25), "BB": (0.80, 0.30, 0.30), "CC": (0.55, 0.20, 0.40)}
LOCAL = {"AA": (0.72, 0.15, 0.30), "BB": (0.85, 0.10, 0.20), "CC": (0.60, 0.25, NAN)}


def write_run(path: Path, strategy: str, values: dict[str, tuple[float, float, float]],
              seed: int = 0, task: str = "income") -> Path:
    """A two-round results directory whose final-round per-state metrics are `values`."""
    path.mkdir(parents=True)
    states = sorted(values)
    config = {
        "config": {"task": task, "strategy": strategy, "seed": seed, "num-server-rounds": 2, "k": 2},
        "seed": seed,
        "data": {"source": "synthetic", "path": "", "states": states, "num_clients": len(states)},
        "versions": {"python": "3.11"},
        "git_commit": "abc",
    }
    (path / "config.json").write_text(json.dumps(config))
    (path / "summary.json").write_text(json.dumps({"strategy": strategy, "task": task, "rounds": 2}))
    counts = [
        (r, s, "", a, g, 10, 2, 3, 4, 1)
        for r in (1, 2) for s in states for a, gs in ATTRIBUTES.items() for g in gs
    ]
    pd.DataFrame(counts, columns=COUNTS_COLUMNS).to_csv(path / "counts.csv", index=False)
    rows = []
    for r in (1, 2):
        for s, (accuracy, sp_sex, sp_race) in values.items():
            scale = 1.0 if r == 2 else 0.5  # round 1 differs, so a wrong round would show
            rows += [(r, s, "", "", "accuracy", accuracy * scale), (r, s, "", "", "loss", 0.5)]
            for a, sp in (("sex", sp_sex), ("race", sp_race)):
                rows += [(r, s, "", a, "sp_gap", sp * scale), (r, s, "", a, "eo_gap", 0.1),
                         (r, s, "", a, "eodds_gap", 0.1)]
    pd.DataFrame(rows, columns=METRICS_COLUMNS).to_csv(path / "metrics.csv", index=False)
    return path


@pytest.fixture
def pair(tmp_path):
    return write_run(tmp_path / "fedavg", "fedavg", FEDAVG), write_run(tmp_path / "ifca", "ifca", IFCA)


def test_deltas_are_other_minus_fedavg_per_state_at_the_final_round(pair):
    frame = compare_runs(*(RunResults.load(p) for p in pair))
    assert list(frame.columns) == COMPARE_COLUMNS
    assert frame.attrs["round"] == 2
    delta = frame.set_index(["state", "attribute", "metric"])["delta"]
    assert delta[("AA", "", "accuracy")] == pytest.approx(0.05)
    assert delta[("CC", "", "accuracy")] == pytest.approx(-0.05)
    assert delta[("BB", "sex", "sp_gap")] == pytest.approx(0.20)
    assert delta[("CC", "race", "sp_gap")] == pytest.approx(0.10)
    assert math.isnan(delta[("CC", "sex", "sp_gap")])
    outcome = frame.set_index(["state", "attribute", "metric"])["outcome"]
    assert outcome[("AA", "sex", "sp_gap")] == "gain"  # smaller gap
    assert outcome[("BB", "sex", "sp_gap")] == "loss"
    assert outcome[("BB", "", "accuracy")] == "tie"
    assert outcome[("CC", "sex", "sp_gap")] == "undefined"


def test_gain_loss_summary_counts_states_per_quantity(pair):
    summary = gain_loss_summary(compare_runs(*(RunResults.load(p) for p in pair)))
    by = summary.set_index(["attribute", "metric"])[["gain", "loss", "tie", "undefined", "states"]]
    assert by.loc[("", "accuracy")].tolist() == [1, 1, 1, 0, 3]
    assert by.loc[("sex", "sp_gap")].tolist() == [1, 1, 0, 1, 3]
    assert by.loc[("race", "sp_gap")].tolist() == [1, 1, 1, 0, 3]
    assert by.loc[("race", "eo_gap")].tolist() == [0, 0, 3, 0, 3]


def test_cli_writes_the_tidy_csv_and_prints_markdown(pair, tmp_path, capsys):
    out = tmp_path / "delta.csv"
    assert main([str(pair[1]), str(pair[0]), "--out", str(out)]) == 0  # FedAvg found by its strategy
    table = pd.read_csv(out, keep_default_na=False)
    assert list(table.columns) == COMPARE_COLUMNS
    assert len(table) == 3 * 7
    printed = capsys.readouterr().out
    assert "| ifca | SP gap (sex) | 1 | 1 | 0 | 1 | 3 | +0.050 |" in printed
    assert "| AA | +0.050 | -0.100 |" in printed


@pytest.fixture
def trio(pair, tmp_path):
    return (*pair, write_run(tmp_path / "local", "local", LOCAL))


def test_deltas_against_local_are_other_minus_local_in_a_local_column(trio):
    fedavg, ifca, local = (RunResults.load(p) for p in trio)
    frame = compare_runs(local, ifca)
    assert list(frame.columns) == compare_columns("local")
    by = frame.set_index(["state", "attribute", "metric"])
    assert by.loc[("AA", "", "accuracy"), ["local", "other"]].tolist() == [0.72, 0.75]
    assert by.loc[("AA", "", "accuracy"), "delta"] == pytest.approx(0.03)
    assert by.loc[("BB", "sex", "sp_gap"), "delta"] == pytest.approx(0.20)
    assert by["outcome"][("AA", "", "accuracy")] == "gain"
    assert by["outcome"][("BB", "sex", "sp_gap")] == "loss"
    assert by["outcome"][("CC", "race", "sp_gap")] == "undefined"  # local's gap is undefined
    fedavg_frame = compare_runs(local, fedavg).set_index(["state", "attribute", "metric"])
    assert fedavg_frame.loc[("CC", "", "accuracy"), ["delta", "outcome"]].tolist() == [0.0, "tie"]


def test_cli_with_a_local_run_also_writes_every_other_run_against_local(trio, tmp_path):
    out = tmp_path / "comparison.csv"
    assert main([*map(str, trio), "--out", str(out)]) == 0
    table = pd.read_csv(tmp_path / "comparison_vs_local.csv", keep_default_na=False,
                        na_values={"delta": [""]})
    assert list(table.columns) == compare_columns("local")
    assert pd.unique(table["strategy"]).tolist() == ["fedavg", "ifca"]  # local is not compared with itself
    by = table.set_index(["strategy", "state", "attribute", "metric"])
    assert by.loc[("fedavg", "AA", "", "accuracy"), "delta"] == pytest.approx(-0.02)
    assert by.loc[("ifca", "CC", "sex", "sp_gap"), "delta"] == pytest.approx(-0.05)
    assert by.loc[("ifca", "CC", "sex", "sp_gap"), "outcome"] == "gain"


def test_cli_keeps_the_fedavg_comparison_and_adds_local_as_one_more_strategy(pair, trio, tmp_path):
    assert main([*map(str, pair), "--out", str(tmp_path / "without.csv")]) == 0
    assert main([*map(str, trio), "--out", str(tmp_path / "with.csv")]) == 0
    without, with_local = ((tmp_path / name).read_text().splitlines() for name in ("without.csv", "with.csv"))
    assert with_local[:len(without)] == without
    assert {line.split(",")[0] for line in with_local[len(without):]} == {"local"}


def test_cli_prints_a_second_summary_against_local(trio, capsys):
    assert main(list(map(str, trio))) == 0
    printed = capsys.readouterr().out
    fedavg_part, local_part = printed.split("\n\n# Change relative to local (")
    assert "## States gaining and losing (gain = higher accuracy or smaller gap)" in fedavg_part
    assert "## States gaining and losing against local (gain = higher accuracy or smaller gap)" in local_part
    assert "| ifca | accuracy | 1 | 2 | 0 | 0 | 3 | -0.023 |" in local_part
    assert "| fedavg | accuracy | 0 | 2 | 1 | 0 | 3 | -0.023 |" in local_part
    assert "## fedavg: per state against local" in local_part
    assert "| local |" not in local_part


def test_cli_without_a_local_run_writes_and_prints_nothing_against_local(pair, tmp_path, capsys):
    assert main([*map(str, pair), "--out", str(tmp_path / "comparison.csv")]) == 0
    assert sorted(p.name for p in tmp_path.glob("*.csv")) == ["comparison.csv"]
    printed = capsys.readouterr().out
    assert printed.count("# Change relative to") == 1 and "against local" not in printed


def test_cli_refuses_two_local_runs(trio, tmp_path, capsys):
    second = write_run(tmp_path / "local2", "local", LOCAL)
    with pytest.raises(SystemExit) as exit_info:
        main([*map(str, trio), str(second)])
    assert exit_info.value.code == 2
    assert "need at most one local run" in capsys.readouterr().err


def test_cli_refuses_runs_without_a_fedavg_run(tmp_path, capsys):
    a = write_run(tmp_path / "a", "ifca", IFCA)
    b = write_run(tmp_path / "b", "perfedavg", FEDAVG)
    with pytest.raises(SystemExit) as exit_info:
        main([str(a), str(b)])
    assert exit_info.value.code == 2
    assert "need exactly one fedavg run" in capsys.readouterr().err


def test_cli_refuses_runs_on_different_states_and_names_them(tmp_path, capsys):
    fedavg = write_run(tmp_path / "fedavg", "fedavg", FEDAVG)
    other = write_run(tmp_path / "ifca", "ifca", {"AA": IFCA["AA"], "BB": IFCA["BB"], "DD": IFCA["CC"]})
    with pytest.raises(SystemExit) as exit_info:
        main([str(fedavg), str(other), "--out", str(tmp_path / "x.csv")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "states: only in" in err and "CC" in err and "DD" in err
    assert not (tmp_path / "x.csv").exists()


def test_loading_names_the_missing_contract_file(tmp_path):
    run = write_run(tmp_path / "run", "fedavg", FEDAVG)
    (run / "counts.csv").unlink()
    with pytest.raises(ResultsError, match="missing counts.csv"):
        RunResults.load(run)
