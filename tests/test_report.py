"""Specification of the study report, on small synthetic results directories."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.compare import RunResults
from analysis.report import bootstrap_ci, main
from analysis.tilemap import COLUMNS, ROWS, TILES
from core.counts import confusion_counts
from core.states import FOLKTABLES_STATES
from core.tasks import ATTRIBUTES
from recorder.files import COUNTS_COLUMNS
from recorder.metrics import metrics_frame

SIZES = {"CA": 400, "TX": 300, "VT": 60, "WY": 25}  # test records per state
ROUNDS = 3
CLUSTERS = {"CA": 0, "TX": 0, "VT": 1, "WY": 1}
FIGURES = [
    "learning_curves.png", "accuracy_vs_sp_gap.png", "clusters_ifca.png", "sp_gap_map_sex.png",
    "sp_gap_map_race.png", "delta_sp_gap_map_sex.png", "delta_sp_gap_map_race.png",
]
SECTIONS = [
    "# Personalization and group fairness: study report",
    "## Learning curves and final-round means",
    "## Accuracy against SP gap, one point per state (final round)",
    "## Cluster membership (final round)",
    "## SP gap by state (final round, mean over seeds)",
    "## Per-state change relative to FedAvg (other - fedavg, final round)",
    "## Per-state results (final round) with group sizes",
]


def split_records(state: str, seed: int) -> dict[str, np.ndarray]:
    """A state's test split (same for every strategy of a seed): sex, race and label per record."""
    rng = np.random.default_rng([seed, sum(map(ord, state))])
    n = SIZES[state]
    race = (rng.random(n) < 0.3).astype(int)
    return {"sex": rng.integers(0, 2, n), "race": race, "y": rng.integers(0, 2, n)}


def write_run(path: Path, strategy: str, seed: int, one_class: bool = False, states_key: str = "",
              source: str = "synthetic") -> Path:
    """A results directory with counts, metrics (by the project's formula), config, summary; with
    `one_class` every client predicts 0 for every record."""
    rng = np.random.default_rng([seed, len(strategy)])
    clustered = strategy == "ifca"
    counts, clients, cluster_rows = [], [], []
    for round_ in range(1, ROUNDS + 1):
        for state in SIZES:
            records = split_records(state, seed)
            flip = rng.random(SIZES[state]) < 0.35 - 0.05 * round_
            bias = rng.random(SIZES[state]) < 0.2 * records["sex"]  # predicts fewer positives for women
            y_pred = np.where(flip, 1 - records["y"], records["y"]) * (1 - bias) * (not one_class)
            cluster = CLUSTERS[state] if clustered else pd.NA
            for attribute, names in ATTRIBUTES.items():
                cells = confusion_counts(records["y"], y_pred, records[attribute])
                for g, name in enumerate(names):
                    counts.append([round_, state, cluster, attribute, name, int(cells[g].sum()), *cells[g]])
            clients.append([round_, state, cluster, SIZES[state], 0.7 - 0.05 * round_])
            if clustered:
                cluster_rows.append([round_, state, cluster, *rng.random(2)])
    counts = pd.DataFrame(counts, columns=COUNTS_COLUMNS)
    clients = pd.DataFrame(clients, columns=["round", "state", "cluster", "n", "loss"])
    for frame in (counts, clients):
        frame["cluster"] = frame["cluster"].astype("Int64")
    path.mkdir(parents=True)
    counts.to_csv(path / "counts.csv", index=False)
    metrics_frame(counts, clients).to_csv(path / "metrics.csv", index=False)
    if clustered:
        pd.DataFrame(cluster_rows, columns=["round", "state", "cluster", "loss_0", "loss_1"]).to_csv(
            path / "clusters.csv", index=False
        )
    config = {
        "config": {"task": "income", "strategy": strategy, "seed": seed, "num-server-rounds": ROUNDS, "k": 2,
                   "lambda": 0.0, "results-dir": str(path), "states": states_key},
        "seed": seed,
        "data": {"source": source, "label": "synthetic, 4 states", "path": "", "states": list(SIZES),
                 "num_clients": len(SIZES), "input_width": 10},
        "versions": {"python": "3.11.7", "numpy": "2.4.6"},
        "git_commit": "0123456789abcdef",
        "results_dir": str(path),
        "started": "2026-01-01T00:00:00+00:00",
    }
    (path / "config.json").write_text(json.dumps(config))
    summary = {"strategy": strategy, "task": "income", "rounds": ROUNDS, "num_clients": len(SIZES)}
    (path / "summary.json").write_text(json.dumps(summary))
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    return {
        "fedavg0": write_run(root / "fedavg0", "fedavg", 0),
        "fedavg1": write_run(root / "fedavg1", "fedavg", 1),
        "ifca0": write_run(root / "ifca0", "ifca", 0),
    }


@pytest.fixture(scope="module")
def report(runs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "out"
    assert main([*map(str, runs.values()), "--out", str(out)]) == 0
    return out


def final_values(run: Path, state: str, attribute: str, metric: str) -> float:
    m = RunResults.load(run).metrics
    row = m[(m["round"] == ROUNDS) & (m["state"] == state) & (m["attribute"] == attribute)
            & (m["metric"] == metric)]
    return float(row["value"].iloc[0])


def test_report_has_every_section_and_a_row_per_state_with_its_group_sizes(report, runs):
    text = (report / "report.md").read_text()
    positions = [text.index(heading) for heading in SECTIONS]
    assert positions == sorted(positions)
    counts = RunResults.load(runs["ifca0"]).counts
    final = counts[(counts["round"] == ROUNDS) & (counts["attribute"] == "sex")]
    final = final.set_index(["state", "group"])["n"]
    section = text[text.index("### ifca (seed 0)"):]
    for state in SIZES:
        sizes = f"{final[(state, 'male')]}/{final[(state, 'female')]}"
        assert re.search(rf"^\| {state} \| [0-9.]+ \| {sizes} \|", section, re.MULTILINE), state


def test_the_header_says_whether_the_data_was_real_or_synthetic_and_how_many_states(report):
    assert "| income | synthetic (synthetic, 4 states) | 4 |" in (report / "report.md").read_text()


def test_every_embedded_figure_exists_and_is_a_nonempty_png(report):
    text = (report / "report.md").read_text()
    embedded = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert sorted(embedded) == sorted(FIGURES)
    for name in FIGURES:
        data = (report / name).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 5000, name


def test_two_seeds_are_averaged_with_an_interval_around_the_mean(report, runs):
    text = (report / "report.md").read_text()
    mean = np.mean([final_values(runs[r], "ALL", "", "accuracy") for r in ("fedavg0", "fedavg1")])
    row = next(line for line in text.splitlines() if line.startswith("| fedavg | 0, 1 |"))
    interval = re.match(rf"\| fedavg \| 0, 1 \| {mean:.3f} \[([0-9.]+), ([0-9.]+)\]", row)
    low, high = map(float, interval.groups())
    assert low <= mean <= high
    single = next(line for line in text.splitlines() if line.startswith("| ifca | 0 |"))
    assert "[" not in single  # one seed: no interval


def test_comparison_sentence_counts_the_states_where_the_gap_shrinks(report, runs):
    lower = sum(
        final_values(runs["ifca0"], s, "sex", "sp_gap") < final_values(runs["fedavg0"], s, "sex", "sp_gap")
        for s in SIZES
    )
    text = (report / "report.md").read_text()
    assert f"ifca lowers the SP gap (sex) in {lower} of {len(SIZES)} states" in text


def test_a_local_run_adds_a_comparison_of_every_other_configuration_against_it(runs, tmp_path):
    local = write_run(tmp_path / "local0", "local", 0)
    out = tmp_path / "out"
    assert main([*map(str, runs.values()), str(local), "--out", str(out)]) == 0
    table = pd.read_csv(out / "comparison_vs_local.csv", keep_default_na=False, na_values={"delta": [""]})
    assert pd.unique(table["strategy"]).tolist() == ["fedavg", "ifca"]
    wy = table[(table["strategy"] == "ifca") & (table["state"] == "WY") & (table["metric"] == "accuracy")]
    expected = final_values(runs["ifca0"], "WY", "", "accuracy") - final_values(local, "WY", "", "accuracy")
    assert wy["delta"].item() == pytest.approx(expected)
    text = (out / "report.md").read_text()
    headings = ["## Per-state change relative to FedAvg", "## Per-state change relative to local training",
                "### fedavg: Δ per state against local", "## Per-state results"]
    positions = [text.index(heading) for heading in headings]
    assert positions == sorted(positions)


def single_run_report(tmp_path: Path, **run) -> str:
    out = tmp_path / "report"
    assert main([str(write_run(tmp_path / "run", "fedavg", 0, **run)), "--out", str(out)]) == 0
    return (out / "report.md").read_text()


def test_a_single_run_gets_a_run_report_worded_for_one_seed(tmp_path):
    text = single_run_report(tmp_path)
    assert text.startswith("# Personalization and group fairness: run report\n\nOne run, seed 0: no intervals")
    assert "seeds" not in text.replace("over seeds and gives them", "")


def test_states_left_out_by_the_states_key_are_not_selected_not_absent(tmp_path):
    text = single_run_report(tmp_path, states_key=",".join(SIZES), source="table")
    missing = [s for s in FOLKTABLES_STATES if s not in SIZES]
    assert f"Not selected (the `states` key): {', '.join(missing)}." in text and "Absent from the data" not in text


def test_a_run_where_every_client_predicts_one_class_is_called_degenerate_and_not_ranked(tmp_path):
    text = single_run_report(tmp_path, one_class=True)
    assert "**fedavg is degenerate**: at the final round every client predicts a single class" in text
    assert "largest in" not in text and "0 in every state (degenerate: one class predicted)" in text


def test_bootstrap_interval_contains_the_mean_and_collapses_with_one_seed():
    mean, low, high = bootstrap_ci([0.1, 0.3, 0.2, 0.5])
    assert mean == pytest.approx(0.275)
    assert 0.1 <= low < mean < high <= 0.5
    assert bootstrap_ci([0.1, 0.3, 0.2, 0.5]) == (mean, low, high)  # seeded
    assert bootstrap_ci([0.42]) == (0.42, 0.42, 0.42)


def test_tile_map_places_every_folktables_state_and_dc_on_its_own_tile():
    states = [*FOLKTABLES_STATES, "DC"]
    assert len(FOLKTABLES_STATES) == 51  # 50 states and PR
    assert set(states) <= set(TILES)
    positions = [TILES[s] for s in states]
    assert len(set(positions)) == len(positions)
    assert all(0 <= row < ROWS and 0 <= column < COLUMNS for row, column in positions)


@pytest.mark.parametrize("problem", ["missing dir", "not a results dir", "unreadable csv", "out is a file"])
def test_bad_input_is_one_message_exit_2_and_leaves_no_output(runs, tmp_path, capsys, problem):
    run = tmp_path / "run"
    out = tmp_path / "out"
    if problem == "not a results dir":
        run.mkdir()
    elif problem == "unreadable csv":
        write_run(run, "fedavg", 0)
        (run / "metrics.csv").write_text("round,state,cluster,attribute,metric,value\n1,CA,,,accuracy,high\n")
    elif problem == "out is a file":
        run = runs["fedavg0"]
        out.write_text("keep me")
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(SystemExit) as exit_info:
        main([str(run), "--out", str(out)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m analysis.report: error:") and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    if problem == "out is a file":
        assert out.read_text() == "keep me"
