"""Specification of the study: grid and plan, summary over seeds, tests across states, cluster
agreement, the report, bad input; and one real study through ./run.sh study (marked e2e)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import wilcoxon
from sklearn.metrics import adjusted_rand_score

from analysis.compare import RunResults
from analysis.document import to_markdown
from analysis.report import bootstrap_ci
from analysis.stats import adjusted_rand_index, chosen_round, holm, pareto_front, plateau_round, signed_rank_test
from analysis.study import build_parser, main
from analysis.study_plan import build_grid, plan, study_record, study_settings
from analysis.study_report import data_section
from analysis.study_run import eta, federation_config, federations, run_state
from analysis.study_tables import Arm, verdict
from core.counts import confusion_counts
from core.states import FOLKTABLES_STATES
from core.tasks import ATTRIBUTES
from recorder.files import COUNTS_COLUMNS
from recorder.metrics import metrics_frame
from tests.conftest import REPO
from tests.test_resume import kill_marked

STATES = ["AL", "CA", "GA", "MN", "NY", "OH", "TX", "VT", "WA", "WY"]
ROUNDS = 3
FLIP = {"fedavg": 0.32, "ifca": 0.18, "fair-ifca": 0.22}  # share of wrong predictions
STUDY = ["--strategies", "fedavg ifca fair-ifca", "--seeds", "3", "--lambdas", "0.5,2",
         "--run-config", 'data-source="synthetic" num-server-rounds=3']
VAL_STUDY = ["--strategies", "fedavg ifca", "--seeds", "0,1", "--run-config", 'data-source="synthetic"']
QUANTITIES = [("accuracy", ""), *((g, a) for g in ("sp_gap", "eo_gap", "eodds_gap") for a in ATTRIBUTES)]


def predictions(rng: np.random.Generator, y: np.ndarray, sex: np.ndarray, flip: float, bias: float) -> np.ndarray:
    wrong = rng.random(y.size) < flip
    fewer_for_women = rng.random(y.size) < bias * sex
    return np.where(wrong, 1 - y, y) * (1 - fewer_for_women)


def tables(rng: np.random.Generator, strategy: str, lam: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(counts, clients) of made-up predictions per round and state; the split depends on the seed only."""
    counts, clients = [], []
    for round_ in range(1, ROUNDS + 1):
        for i, state in enumerate(STATES):
            split = np.random.default_rng([seed, i])
            n = 80 + 30 * i
            y, sex, race = split.integers(0, 2, n), split.integers(0, 2, n), (split.random(n) < 0.3).astype(int)
            y_pred = predictions(rng, y, sex, FLIP[strategy] + 0.02 * (ROUNDS - round_), 0.25 / (1 + lam))
            cluster = i % 2 if strategy != "fedavg" else pd.NA
            for attribute, group in (("sex", sex), ("race", race)):
                cells = confusion_counts(y, y_pred, group)
                for g, name in enumerate(ATTRIBUTES[attribute]):
                    counts.append([round_, state, cluster, attribute, name, int(cells[g].sum()), *cells[g]])
            clients.append([round_, state, cluster, n, rng.uniform(0.4, 0.7)])
    counts = pd.DataFrame(counts, columns=COUNTS_COLUMNS)
    clients = pd.DataFrame(clients, columns=["round", "state", "cluster", "n", "loss"])
    for frame in (counts, clients):
        frame["cluster"] = frame["cluster"].astype("Int64")
    return counts, clients


def write_run(path: Path, strategy: str, seed: int, lam: float = 0.0, val: bool = False,
              plateaued: bool = True) -> None:
    """A completed results directory whose metrics.csv comes from the project's formula, stopped early
    on a plateau of its validation loss (or, `plateaued` False, still improving at the ceiling)."""
    rng = np.random.default_rng([seed, len(strategy), int(lam * 10)])
    counts, clients = tables(rng, strategy, lam, seed)
    path.mkdir(parents=True)
    counts.to_csv(path / "counts.csv", index=False)
    metrics_frame(counts, clients).to_csv(path / "metrics.csv", index=False)
    if val:
        counts, clients = tables(rng, strategy, lam, seed + 100)
        metrics_frame(counts, clients).to_csv(path / "val_metrics.csv", index=False)
    if strategy != "fedavg":
        rows = [[r, s, (i + (r == ROUNDS and i == seed)) % 2, *rng.random(2)]
                for r in range(1, ROUNDS + 1) for i, s in enumerate(STATES)]
        pd.DataFrame(rows, columns=["round", "state", "cluster", "loss_0", "loss_1"]).to_csv(
            path / "clusters.csv", index=False)
    config = {"config": {"task": "income", "strategy": strategy, "seed": seed, "num-server-rounds": ROUNDS, "k": 2,
                         "lambda": lam, "fair-attribute": "sex", "fair-metric": "sp", "results-dir": str(path)},
              "seed": seed, "data": {"source": "synthetic", "path": "", "states": STATES}}
    (path / "config.json").write_text(json.dumps(config))
    stopped = {"round": ROUNDS, "plateaued": plateaued,
               "reason": "plateau: made up" if plateaued else f"ceiling: num-server-rounds {ROUNDS}"}
    (path / "summary.json").write_text(json.dumps({"strategy": strategy, "rounds": ROUNDS, "stopped": stopped}))


def make_study(out: Path, argv: list[str], val: bool = False, stalled: tuple[str, ...] = ()) -> Path:
    """A study directory whose every run is complete, so `main` trains nothing and only reports; the
    `stalled` strategies' runs did not converge."""
    args = build_parser().parse_args([*argv, "--out", str(out)])
    grid, _ = build_grid(args)
    runs = plan(grid)
    out.mkdir(parents=True)
    (out / "study.json").write_text(json.dumps(study_record(grid, runs)))
    for run in runs:
        lam = float(run.config.split("=")[1]) if run.config != "-" else 0.0
        write_run(out / run.run_dir, run.strategy, run.seed, lam, val, plateaued=run.strategy not in stalled)
    assert main([*argv, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    return make_study(tmp_path_factory.mktemp("study") / "s", STUDY)


@pytest.fixture(scope="module")
def val_study(tmp_path_factory) -> Path:
    return make_study(tmp_path_factory.mktemp("val") / "s", VAL_STUDY, val=True)


def metrics(study: Path, run_dir: str, name: str = "metrics.csv") -> pd.DataFrame:
    return pd.read_csv(study / run_dir / name, keep_default_na=False)


def value(frame: pd.DataFrame, round_: int, state: str, attribute: str, metric: str) -> float:
    row = frame[(frame["round"] == round_) & (frame["state"] == state) & (frame["attribute"] == attribute)
                & (frame["metric"] == metric)]
    return float(row["value"].iloc[0]) if len(row) else np.nan


def read_summary(study: Path) -> pd.DataFrame:
    return pd.read_csv(study / "summary.csv", keep_default_na=False, na_values=[""])


# --- grid and plan ----------------------------------------------------------------------------------

def test_plan_gives_each_strategy_its_study_settings_under_the_users_keys_and_a_run_per_weight_and_seed():
    args = build_parser().parse_args(["--strategies", "fedavg fair-ifca", "--seeds", "2", "--lambdas", "0.5,5",
                                      "--run-config", 'lr=0.2 states="AL,WY"', "--out", "/tmp/x"])
    runs = plan(build_grid(args)[0])
    assert [(r.strategy, r.config, r.seed) for r in runs] == [
        ("fedavg", "-", 0), ("fair-ifca", "lambda=0.5", 0), ("fair-ifca", "lambda=5", 0),
        ("fedavg", "-", 1), ("fair-ifca", "lambda=0.5", 1), ("fair-ifca", "lambda=5", 1)]
    fair = runs[2]
    assert fair.keys == {"strategy": '"fair-ifca"', "lr": "0.2", "local-epochs": "1", "lambda": "5.0",
                         "states": '"AL,WY"', "seed": "0"}
    assert fair.run_config(Path("/s/runs/x"), resume=True).endswith('results-dir="/s/runs/x" resume="/s/runs/x"')
    assert study_settings("ifca") == {"lr": "0.05", "local-epochs": "1"}
    assert study_settings("perfedavg") == {"lr": "0.001", "local-epochs": "10"}


def test_a_grid_file_gives_the_study_and_per_strategy_keys(tmp_path):
    grid_file = tmp_path / "grid.toml"
    grid_file.write_text('strategies = ["fedavg", "ifca"]\nseeds = [3, 7]\nout = "study"\n'
                         '[run-config]\ndata-source = "synthetic"\nnum-server-rounds = 4\n'
                         '[strategy-config.ifca]\nk = 3\n')
    grid, out = build_grid(build_parser().parse_args(["--grid", str(grid_file), "--run-config", "num-server-rounds=2"]))
    assert (grid.strategies, grid.seeds, grid.lambdas) == (("fedavg", "ifca"), (3, 7), ())
    assert grid.run_config == {"data-source": '"synthetic"', "num-server-rounds": "2"}  # the command line wins
    assert [r.keys.get("k") for r in plan(grid)] == [None, "3", None, "3"]
    assert out == Path.cwd() / "study"
    only, _ = build_grid(build_parser().parse_args(["--grid", str(grid_file), "--strategies", "fedavg"]))
    assert only.strategy_config == {}  # keys of a strategy left out are not part of the study


def test_the_example_grid_file_is_a_valid_grid():
    grid, _ = build_grid(build_parser().parse_args(["--grid", str(REPO / "analysis/grids/paper.toml")]))
    assert "fedavg" in grid.strategies and len(grid.seeds) == 5


# --- summary.csv --------------------------------------------------------------------------------------

def test_summary_equals_a_recomputation_from_the_runs_metrics(study):
    summary = read_summary(study)
    runs = pd.read_csv(study / "runs.csv", keep_default_na=False)
    final = summary[summary["round"] == "final"]
    assert len(final) == 4 * 2 * len(QUANTITIES + [("loss", "")])  # arms x levels x metrics
    assert set(summary["round"]) == {"final"}  # no validation split: no val-chosen rows
    for row in final.itertuples(index=False):
        dirs = runs[(runs["strategy"] == row.strategy) & (runs["config"] == row.config)]["run_dir"]
        state = {"mean": "MEAN", "pooled": "ALL"}[row.level]
        attribute = "" if pd.isna(row.attribute) else row.attribute
        values = [value(metrics(study, d), ROUNDS, state, attribute, row.metric) for d in dirs]
        mean, low, high = bootstrap_ci(values)
        assert (row.mean, row.ci_low, row.ci_high, row.n_seeds) == pytest.approx((mean, low, high, 3)), row


def test_val_chosen_rows_use_each_runs_round_of_lowest_pooled_validation_loss(val_study):
    summary = read_summary(val_study)
    row = summary[(summary["strategy"] == "ifca") & (summary["round"] == "val-chosen") & (summary["level"] == "pooled")
                  & (summary["metric"] == "accuracy")].iloc[0]
    values = []
    for seed in (0, 1):
        val = metrics(val_study, f"runs/ifca_seed{seed}", "val_metrics.csv")
        loss = val[(val["state"] == "ALL") & (val["metric"] == "loss")].sort_values("round")
        chosen = int(loss["round"].iloc[int(np.argmin(loss["value"].to_numpy()))])
        values.append(value(metrics(val_study, f"runs/ifca_seed{seed}"), chosen, "ALL", "", "accuracy"))
    assert (row["mean"], row["n_seeds"]) == pytest.approx((np.mean(values), 2))
    text = (val_study / "report.md").read_text()
    assert "Every run has a validation split" in text


def test_without_validation_the_report_says_final_round_only(study):
    assert "only final-round results are reported" in (study / "report.md").read_text()


# --- tests across states ------------------------------------------------------------------------------

def per_state_mean_deltas(study: Path, other: str, attribute: str, metric: str) -> np.ndarray:
    deltas = []
    for seed in range(3):
        base, new = metrics(study, f"runs/fedavg_seed{seed}"), metrics(study, f"runs/{other}_seed{seed}")
        deltas.append([value(new, ROUNDS, s, attribute, metric) - value(base, ROUNDS, s, attribute, metric)
                       for s in STATES])
    return np.nanmean(np.array(deltas), axis=0)


@pytest.mark.parametrize(("attribute", "metric"), [("", "accuracy"), ("sex", "sp_gap"), ("race", "eo_gap")])
def test_wilcoxon_of_the_per_state_mean_deltas_is_scipys(study, attribute, metric):
    tests = pd.read_csv(study / "tests.csv", keep_default_na=False, na_values=[""])
    row = tests[(tests["baseline"] == "fedavg") & (tests["strategy"] == "ifca") & (tests["metric"] == metric)
                & (tests["attribute"].fillna("") == attribute)].iloc[0]
    deltas = per_state_mean_deltas(study, "ifca", attribute, metric)
    expected = wilcoxon(deltas[deltas != 0])
    assert (row["W"], row["p"], row["n_states"]) == pytest.approx((expected.statistic, expected.pvalue, 10))
    assert row["median_delta"] == pytest.approx(np.median(deltas))


def test_p_holm_is_holm_over_every_test_against_the_same_baseline(study):
    tests = pd.read_csv(study / "tests.csv", keep_default_na=False, na_values=[""])
    family = tests[tests["baseline"] == "fedavg"]
    assert len(family) == 3 * 7  # ifca and two fair-ifca weights x seven quantities
    np.testing.assert_allclose(family["p_holm"], holm(family["p"].to_numpy()))


def test_holm_matches_a_hand_computation():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> monotone 0.02, 0.03, 0.06, 0.06
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(holm([np.nan, 0.2, 0.6]), [np.nan, 0.4, 0.6])  # NaN is not a test
    np.testing.assert_allclose(holm([0.5, 0.9]), [1.0, 1.0])  # capped at 1


def test_signed_rank_test_drops_zero_deltas_and_is_undefined_without_any():
    w, p, n = signed_rank_test([0.1, -0.2, 0.3, 0.0, 0.4, np.nan])
    expected = wilcoxon([0.1, -0.2, 0.3, 0.4])
    assert (w, p, n) == (expected.statistic, expected.pvalue, 4)
    assert np.isnan(signed_rank_test([0.0, 0.0])[1])


@pytest.mark.parametrize(("metric", "mean", "low", "high", "p_holm", "seeds", "expected"), [
    ("accuracy", 0.05, 0.01, 0.09, 0.01, 3, "better"),
    ("sp_gap", 0.05, 0.01, 0.09, 0.01, 3, "worse"),  # a larger gap is worse
    ("accuracy", 0.05, -0.01, 0.09, 0.01, 3, "no clear change"),  # the interval over seeds holds 0
    ("accuracy", 0.05, 0.05, 0.05, 0.01, 1, "better"),  # one seed: no interval to ask
    ("sp_gap", -0.05, -0.09, -0.01, 0.06, 3, "no clear change"),  # not significant across clients
])
def test_a_comparison_is_decided_by_the_sign_holm_and_the_interval_over_seeds(metric, mean, low, high, p_holm,
                                                                             seeds, expected):
    assert verdict(metric, mean, low, high, p_holm, seeds) == expected


def test_states_outside_zero_count_per_state_intervals(study):
    tests = pd.read_csv(study / "tests.csv", keep_default_na=False, na_values=[""])
    deltas = pd.read_csv(study / "state_deltas.csv", keep_default_na=False, na_values=[""])
    part = deltas[(deltas["baseline"] == "fedavg") & (deltas["strategy"] == "ifca") & (deltas["metric"] == "accuracy")]
    row = tests[(tests["baseline"] == "fedavg") & (tests["strategy"] == "ifca") & (tests["metric"] == "accuracy")].iloc[0]
    assert row["states_ci_above_0"] == (part["ci_low"] > 0).sum()
    assert row["states_ci_below_0"] == (part["ci_high"] < 0).sum()


# --- clusters, convergence, frontier -------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(6))
def test_adjusted_rand_index_equals_scikit_learns(seed):
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, 1 + seed, 30), rng.integers(0, 3, 30)
    assert adjusted_rand_index(a, b) == pytest.approx(adjusted_rand_score(a, b))
    assert adjusted_rand_index(a, a) == pytest.approx(1.0)


@pytest.mark.parametrize(("a", "b"), [([0, 0, 0], [1, 1, 1]), ([0, 1, 2], [5, 6, 7]), ([0, 0, 0, 0], [0, 1, 2, 3]),
                                      (["x", "y", "x", "y"], ["p", "p", "q", "q"])])
def test_adjusted_rand_index_of_degenerate_partitions_equals_scikit_learns(a, b):
    assert adjusted_rand_index(a, b) == pytest.approx(adjusted_rand_score(a, b))


def test_cluster_diagnostics_compare_seeds_and_census_regions(study):
    diagnostics = pd.read_csv(study / "cluster_diagnostics.csv")
    ifca = diagnostics[diagnostics["strategy"] == "ifca"].iloc[0]
    finals = []
    for seed in range(3):
        clusters = pd.read_csv(study / f"runs/ifca_seed{seed}/clusters.csv")
        finals.append(clusters[clusters["round"] == ROUNDS].set_index("state")["cluster"].reindex(STATES))
    pairs = [adjusted_rand_score(finals[i], finals[j]) for i, j in ((0, 1), (0, 2), (1, 2))]
    assert (ifca["seed_pairs"], ifca["seed_ari_mean"]) == pytest.approx((3, np.mean(pairs)))
    regions = ["South", "West", "South", "Midwest", "Northeast", "Midwest", "South", "Northeast", "West", "West"]
    assert ifca["region_ari"] == pytest.approx(np.mean([adjusted_rand_score(f, regions) for f in finals]))
    churn = pd.read_csv(study / "churn.csv")
    last = churn[(churn["strategy"] == "ifca") & (churn["round"] == ROUNDS)]
    assert last["churn"].tolist() == [0.1, 0.1, 0.1]  # one of ten states moves in the last round


def test_plateau_is_the_first_round_after_which_the_loss_stops_improving_by_a_thousandth():
    assert plateau_round([1, 2, 3, 4, 5], [1.0, 0.8, 0.7, 0.6999, 0.7]) == 3
    assert plateau_round([1, 2, 3], [1.0, 0.9, 0.8]) == 3  # still improving at the end
    assert plateau_round([1, 2, 3, 4, 5], [1.0, 0.9996, 0.9992, 0.9988, 0.9988]) == 2  # small steps add up
    assert plateau_round([1, 2, 3], [np.nan, 0.5, 0.5]) == 2


def test_chosen_round_is_the_earliest_lowest_loss_and_pareto_front_keeps_undominated_points():
    assert chosen_round([1, 2, 3, 4], [0.5, 0.3, 0.4, 0.3]) == 2
    assert chosen_round([1, 2], [np.nan, np.nan]) is None
    front = pareto_front([0.80, 0.85, 0.70, 0.85, np.nan], [0.10, 0.20, 0.05, 0.30, 0.0])
    assert front.tolist() == [True, True, True, False, False]


def test_flagged_comparisons_are_marked_in_the_report(study):
    convergence = pd.read_csv(study / "convergence.csv")
    text = (study / "report.md").read_text()
    for strategy in convergence[convergence["flag_final"]]["strategy"].unique():
        assert re.search(rf"\| {re.escape(strategy)}[^|]* †", text), strategy


# --- the report -----------------------------------------------------------------------------------------

class TagChecker(HTMLParser):
    """Fails on a closing tag that does not close the innermost open one; collects embedded images."""

    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.images: dict[str, str] = {}

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            attrs = dict(attrs)
            self.images[attrs["data-file"]] = attrs["src"]
        elif tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1] if self.stack else None}>"
        self.stack.pop()


def test_html_is_well_formed_and_embeds_every_figure_of_the_markdown(study):
    import base64

    figures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", (study / "report.md").read_text())
    assert len(figures) >= 8 and len(set(figures)) == len(figures)
    checker = TagChecker()
    checker.feed((study / "report.html").read_text())
    checker.close()
    assert checker.stack == []
    assert sorted(checker.images) == sorted(figures)
    for path, src in checker.images.items():
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]) == (study / path).read_bytes()
    assert sorted(p.name for p in (study / "figures").iterdir()) == sorted(Path(f).name for f in figures)


def test_report_has_every_section_and_one_row_per_claim(study):
    text = (study / "report.md").read_text()
    headings = ["## Data", "## Rounds compared", "## Claims", "## Per strategy", "## Per state",
                "## Across states", "## Accuracy-fairness frontier", "## Fairness weight (lambda)",
                "## Cluster diagnostics", "## Convergence",
                "## Gaussian threshold model", "## Runs"]
    positions = [text.index(h) for h in headings]
    assert positions == sorted(positions)
    claims = pd.read_csv(study / "claims.csv")
    assert len(claims) == 7 and set(claims["verdict"]) <= {"supported", "not supported", "mixed", "not assessable"}
    assert claims.loc[0, "verdict"] == "supported"  # made-up predictions: personalization is right more often
    assert claims.loc[5, "verdict"] == "supported"  # the Gaussian model, published setting
    assert claims.loc[6, "verdict"] == "not assessable"  # no control arm in this study
    assert claims.loc[6, "numbers"].startswith("needs completed runs of the control")
    assert "Every run used the same data: income task, synthetic" in text


def test_summary_says_which_fraction_of_each_arms_seeds_converged(study, tmp_path):
    assert set(read_summary(study)["converged"]) == {1.0}
    stalled = make_study(tmp_path / "s", STUDY, stalled=("fedavg",))
    summary = read_summary(stalled)
    assert set(summary.loc[summary["strategy"] == "fedavg", "converged"]) == {0.0}


def test_no_claim_draws_a_verdict_from_an_arm_that_did_not_converge(tmp_path):
    claims = pd.read_csv(make_study(tmp_path / "s", STUDY, stalled=("fedavg",)) / "claims.csv")
    for row in claims.iloc[:3].itertuples():
        assert row.verdict == "not assessable"
        assert "Not judged (not converged): fedavg: 3 of 3 seed(s) still improving at the ceiling (round 3)" in row.numbers
    assert claims.loc[3, "verdict"] != "not assessable"  # the lambda claim rests on ifca and fair-ifca only


def test_lambda_claim_compares_the_largest_with_the_smallest_weight(study):
    claim = pd.read_csv(study / "claims.csv").loc[3]
    assert claim["numbers"].startswith("ifca counted as lambda = 0. lambda 0 -> 2:")  # same settings but lambda
    assert claim["verdict"] in {"supported", "mixed", "not supported"}


def test_the_fair_flhc_lambda_claim_names_what_it_needs_when_the_study_has_no_fair_flhc(study):
    claim = pd.read_csv(study / "claims.csv").loc[4]
    assert claim["claim"] == "Fair-FL+HC's lambda trades accuracy for fairness"
    assert (claim["verdict"], claim["numbers"]) == ("not assessable", "needs converged fair-flhc at 2+ lambdas (or 1 plus flhc)")


def test_the_lambda_table_has_a_row_per_weight_with_ifca_as_lambda_zero(study):
    table = pd.read_csv(study / "lambda.csv")
    accuracy = table[(table["strategy"] == "fair-ifca") & (table["metric"] == "accuracy")]
    assert accuracy["lambda"].tolist() == [0.0, 0.5, 2.0] and accuracy["changed_share"].iloc[0] == 0.0
    assert "lambda.png" in (study / "report.md").read_text()


def test_a_rerun_of_a_complete_study_trains_nothing_and_rewrites_the_outputs(study, capsys):
    (study / "report.md").unlink()
    before = (study / "runs.csv").read_text()
    assert main([*STUDY, "--out", str(study)]) == 0
    assert "nothing to train: all 12 runs" in capsys.readouterr().err
    assert (study / "report.md").is_file() and (study / "runs.csv").read_text() == before


# --- bad input --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("argv", "message"), [
    (["--strategies", "fedavg fedprox"], "--strategies: unknown strategy fedprox; valid choices: fedavg, perfedavg"),
    (["--seeds", "0,x"], "--seeds: '0,x' is not a list of non-negative integers"),
    (["--seeds", "0"], "--seeds: the number of seeds must be >= 1"),
    (["--seeds", "1,1"], "--seeds: seed(s) listed twice"),
    (["--lambdas", "1,-2", "--strategies", "fair-ifca"], "--lambdas: '-2' is not a finite weight >= 0"),
    (["--lambdas", "1", "--strategies", "fedavg"], "--lambdas: weights apply to Fair-* strategies"),
    (["--run-config", "epochs=3"], "--run-config: unknown config key(s) epochs; valid keys: task, data-source"),
    (["--run-config", "seed=3"], "--run-config: key(s) seed are set by the study"),
])
def test_bad_input_is_one_message_exit_2_and_creates_nothing(tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--out", str(out)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m analysis.study: error: ") and err.count("\n") == 1
    assert message in err
    assert not out.exists()


def test_unknown_grid_keys_are_named(tmp_path, capsys):
    grid = tmp_path / "g.toml"
    grid.write_text('strategies = ["fedavg"]\nrounds = 3\n[strategy-config.ifca]\nk = 2\n')
    with pytest.raises(SystemExit):
        main(["--grid", str(grid), "--out", str(tmp_path / "out")])
    assert "has unknown key(s) rounds; valid keys: strategies, seeds, lambdas, out, run-config" in capsys.readouterr().err
    grid.write_text('strategies = ["fedavg"]\n[strategy-config.fedprox]\nmu = 1\n')
    with pytest.raises(SystemExit):
        main(["--grid", str(grid), "--out", str(tmp_path / "out")])
    assert "strategy-config.fedprox: unknown strategy 'fedprox'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_another_study_in_the_out_dir_is_refused_naming_what_differs(study, capsys):
    before = sorted(p.name for p in study.iterdir())
    argv = [*STUDY, "--out", str(study)]
    argv[argv.index("3")] = "0,1"
    with pytest.raises(SystemExit):
        main(argv)
    err = capsys.readouterr().err
    assert "holds a different study" in err and "seeds [0, 1, 2] there, [0, 1] now" in err
    assert sorted(p.name for p in study.iterdir()) == before


def test_a_directory_with_files_but_no_study_is_refused(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(SystemExit):
        main([*VAL_STUDY, "--out", str(tmp_path)])
    assert "is not empty and holds no study.json" in capsys.readouterr().err


def test_a_failed_run_is_recorded_the_study_goes_on_and_a_rerun_resumes_only_what_is_unfinished(
        tmp_path, monkeypatch, capsys):
    """run.sh stands in here for a trainer that writes results like a run (the e2e test runs the real one)."""
    import analysis.study_run as study_module

    calls, federations = [], []

    def fake_train(run_config: str, log: Path) -> tuple[int, str]:
        keys = dict(re.findall(r'(\S+?)=("[^"]*"|\S+)', run_config))
        federations.append(len(federations))
        code = 0
        for table in json.loads(Path(json.loads(keys["replicates"])).read_text()):
            run_dir, strategy, seed = Path(table["results-dir"]), table["strategy"], int(table["seed"])
            calls.append((run_dir.name, "resume" in table))
            if (strategy, seed) == ("ifca", 1) and len(federations) == 1:  # fails the first time, leaving a started run
                run_dir.mkdir(parents=True)
                (run_dir / "config.json").write_text("{}")
                code = 1
                continue
            if run_dir.exists():
                subprocess.run(["rm", "-rf", str(run_dir)], check=True)
            write_run(run_dir, strategy, seed)
        return code, str(1000 + len(federations))

    monkeypatch.setattr(study_module, "train", fake_train)
    monkeypatch.setattr(study_module, "preflight", lambda run_config: None)
    out, argv = tmp_path / "s", ["--strategies", "fedavg ifca", "--seeds", "2", "--out", str(tmp_path / "s")]
    assert main(argv) == 1
    runs = pd.read_csv(out / "runs.csv", keep_default_na=False)
    assert runs["status"].tolist() == ["completed", "completed", "completed", "failed"]
    assert runs["federation"].tolist() == [1001] * 4  # one federation for the whole grid
    assert "FAILED (exit 1" in capsys.readouterr().err
    assert "`runs/ifca_seed1` (failed)" in (out / "report.md").read_text()

    assert main(argv) == 0
    assert calls[4:] == [("ifca_seed1", True)]  # only the failed run, continued from its directory
    again = pd.read_csv(out / "runs.csv", keep_default_na=False)
    assert again["status"].tolist() == ["completed"] * 4
    assert again["wall_s"][:3].tolist() == runs["wall_s"][:3].tolist()
    assert again["federation"].tolist() == [1001, 1001, 1001, 1002]


def test_a_bad_value_is_refused_by_the_apps_own_check_before_any_run(tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main(["--strategies", "fedavg", "--seeds", "1", "--run-config", 'lr=-1 data-source="synthetic" states="AL"',
              "--out", str(out)])
    assert exit_info.value.code == 2
    assert "fedavg (-), runs/fedavg_seed0: config key 'lr' must be > 0, got -1" in capsys.readouterr().err
    assert not out.exists()


def fake_arm(strategy: str, source: str, states: list[str]) -> Arm:
    config = {"config": {"task": "income", "strategy": strategy}, "seed": 0,
              "data": {"source": source, "path": "/d/acs.parquet" if source == "table" else "", "states": states}}
    return Arm(strategy, "-", {0: RunResults(Path("run"), config, pd.DataFrame(), pd.DataFrame(), {}, None)})


def test_data_section_names_the_source_and_the_states_the_46_state_file_lacks():
    states = sorted(set(FOLKTABLES_STATES) - {"CA", "FL", "NY", "TX", "PR"})
    blocks, mixed = data_section([fake_arm("fedavg", "table", states), fake_arm("ifca", "table", states)])
    text = to_markdown(blocks)
    assert not mixed
    assert "Every run used the same data: income task, table `/d/acs.parquet`, 46 clients" in text
    assert "The data has **46 states**: CA, FL, NY, TX and PR are absent" in text


def test_data_section_says_the_data_is_real_and_how_many_states_when_the_run_recorded_it():
    arm = fake_arm("fedavg", "sample", ["MA", "WY"])
    arm.runs[0].config["data"]["label"] = "real, 2 states"
    text = to_markdown(data_section([arm])[0])
    assert "Every run used the same data: income task, sample (real, 2 states), 2 clients" in text


def test_data_section_says_so_when_configurations_ran_on_different_data():
    blocks, mixed = data_section([fake_arm("fedavg", "table", ["AL"]), fake_arm("ifca", "synthetic", ["AL"])])
    assert mixed and "**Mixed data sources**" in to_markdown(blocks)


def test_eta_prices_each_remaining_run_at_its_strategys_mean_wall_time():
    assert eta(["fedavg", "ifca", "perfedavg"], {"fedavg": [10.0, 20.0], "ifca": [4.0]}) == 15 + 4 + (30 + 4) / 3
    assert eta(["fedavg"], {}) is None


# --- the real thing ---------------------------------------------------------------------------------------

E2E_CONFIG = 'states="AL,CA,WY" data-source="synthetic" synthetic-rows=300 local-epochs=1 num-server-rounds=2'


def study_sh(out: Path) -> list[str]:
    return ["bash", str(REPO / "run.sh"), "study", "--strategies", "fedavg ifca", "--seeds", "1",
            "--run-config", E2E_CONFIG, "--out", str(out)]


@pytest.mark.e2e
def test_a_killed_study_resumes_and_a_complete_one_trains_nothing(tmp_path):
    out, marker = tmp_path / "study", uuid.uuid4().hex
    env = {**os.environ, "FAIRFL_VENV": sys.prefix}
    first = subprocess.Popen(study_sh(out), cwd=REPO, env={**env, "FAIRFL_TEST_MARKER": marker},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run_dir = out / "runs" / "fedavg_seed0"
    try:
        deadline = time.monotonic() + 600
        while not ((run_dir / "checkpoint.npz").exists() or (run_dir / "summary.json").exists()):
            assert first.poll() is None and time.monotonic() < deadline, "the study ended or stalled"
            time.sleep(0.1)
        os.kill(first.pid, signal.SIGKILL)
    finally:
        homes = kill_marked(marker)  # the study's run.sh, flwr, SuperLink and Ray processes too
        first.wait(timeout=30)
        for home in homes:
            subprocess.run(["rm", "-rf", home], check=False)
    assert first.returncode == -signal.SIGKILL and not (out / "report.md").exists()
    states = {name: run_state(out / "runs" / name) for name in ("fedavg_seed0", "ifca_seed0")}  # lockstep replicates
    complete, resume = (sum(s == kind for s in states.values()) for kind in ("complete", "resume"))

    second = subprocess.run(study_sh(out), cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    assert second.returncode == 0, second.stderr[-3000:]
    runs = pd.read_csv(out / "runs.csv", keep_default_na=False)
    assert runs["status"].tolist() == ["completed"] * 2
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["fedavg_seed0", "ifca_seed0"]
    resumed = json.loads((run_dir / "config.json").read_text()).get("resumed", [])
    assert f"{complete} complete (skipped), {resume} to resume" in second.stderr
    if states["fedavg_seed0"] == "complete":
        assert resumed == []
    else:
        assert "fedavg seed 0: completed in" in second.stderr and len(resumed) == (states["fedavg_seed0"] == "resume")
    assert set(read_summary(out)["n_seeds"]) == {1}

    third = subprocess.run(study_sh(out), cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert third.returncode == 0, third.stderr[-3000:]
    assert "nothing to train: all 2 runs" in third.stderr
    assert pd.read_csv(out / "runs.csv", keep_default_na=False).equals(runs)  # wall_s unchanged
    assert sorted(p.name for p in (out / "runs").iterdir()) == sorted(runs["run_dir"].str.removeprefix("runs/"))
    assert (out / "report.html").is_file()


@pytest.mark.e2e
def test_a_study_of_two_strategies_and_three_seeds_trains_in_one_federation(tmp_path):
    out = tmp_path / "study"
    command = ["bash", str(REPO / "run.sh"), "study", "--strategies", "fedavg ifca", "--seeds", "3",
               "--run-config", E2E_CONFIG, "--out", str(out)]
    done = subprocess.run(command, cwd=REPO, env={**os.environ, "FAIRFL_VENV": sys.prefix}, capture_output=True,
                          text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = pd.read_csv(out / "runs.csv", keep_default_na=False, dtype=str)
    assert runs["status"].tolist() == ["completed"] * 6
    assert runs["federation"].nunique() == 1 and runs["federation"][0].isdigit()
    assert "in 1 federation(s)" in done.stderr


def test_runs_share_a_federation_unless_their_data_settings_differ(tmp_path):
    grid_file = tmp_path / "grid.toml"
    grid_file.write_text('[strategy-config.ifca]\nstates = "AL,WY"\n')
    args = build_parser().parse_args(["--strategies", "fedavg ifca fair-ifca", "--seeds", "2", "--grid", str(grid_file),
                                      "--run-config", 'data-source="synthetic" states="AL,CA,WY"',
                                      "--out", str(tmp_path / "s")])
    runs = plan(build_grid(args)[0])
    groups = federations([(i, run, "new") for i, run in enumerate(runs)])
    assert [[run.name for _, run, _ in g] for g in groups] == [
        ["fedavg_seed0", "fair-ifca_lambda1_seed0", "fedavg_seed1", "fair-ifca_lambda1_seed1"],
        ["ifca_seed0", "ifca_seed1"]]
    config = federation_config(groups[1], tmp_path / "s", "f")
    assert config == f'data-source="synthetic" states="AL,WY" replicates="{tmp_path / "s" / "federations" / "f.json"}"'
    tables = json.loads((tmp_path / "s" / "federations" / "f.json").read_text())
    assert [(t["strategy"], t["seed"], t["results-dir"]) for t in tables] == [
        ("ifca", s, str(tmp_path / "s" / "runs" / f"ifca_seed{s}")) for s in (0, 1)]
    assert not any(k in t for t in tables for k in ("states", "data-source", "resume"))
