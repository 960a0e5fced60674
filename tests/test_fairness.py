"""Fairness metrics from counts agree with fairlearn on raw predictions, at every level."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_difference,
    equalized_odds_difference,
    true_positive_rate,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import accuracy_score

from core.counts import CELLS, confusion_counts, population_metrics
from recorder.metrics import metrics_frame

GROUPS = {"sex": ("male", "female"), "race": ("white", "non-white")}
GAPS = ("sp_gap", "eo_gap", "eodds_gap")


@st.composite
def predictions(draw: st.DrawFn, both_labels: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random (y_true, y_pred, group) with both groups present, optionally each with both labels."""
    rows = draw(st.lists(st.tuples(st.booleans(), st.booleans(), st.booleans()), max_size=60))
    seeded = [(g, y) for g in (0, 1) for y in ((0, 1) if both_labels else (draw(st.booleans()),))]
    rows += [(y, draw(st.booleans()), g) for g, y in seeded]
    y_true, y_pred, group = (np.array(column, dtype=int) for column in zip(*rows))
    return y_true, y_pred, group


@settings(max_examples=100, deadline=None)
@given(predictions(both_labels=False))
def test_sp_gap_and_accuracy_match_fairlearn(data: tuple[np.ndarray, ...]) -> None:
    y_true, y_pred, group = data
    metrics = population_metrics(confusion_counts(y_true, y_pred, group))
    expected = demographic_parity_difference(y_true, y_pred, sensitive_features=group)
    assert metrics["sp_gap"] == pytest.approx(expected)
    assert metrics["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))


@settings(max_examples=100, deadline=None)
@given(predictions(both_labels=True))
def test_eo_and_eodds_gaps_match_fairlearn(data: tuple[np.ndarray, ...]) -> None:
    y_true, y_pred, group = data
    metrics = population_metrics(confusion_counts(y_true, y_pred, group))
    tpr = MetricFrame(
        metrics=true_positive_rate, y_true=y_true, y_pred=y_pred, sensitive_features=group
    )
    assert metrics["eo_gap"] == pytest.approx(tpr.difference())
    eodds = equalized_odds_difference(y_true, y_pred, sensitive_features=group, agg="worst_case")
    assert metrics["eodds_gap"] == pytest.approx(eodds)


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        # TPR 3/5 vs 1/5 dominates FPR 1/5 vs 2/5; selection 4/10 vs 3/10.
        (
            [[3, 1, 4, 2], [1, 2, 3, 4]],
            {"accuracy": 11 / 20, "sp_gap": 0.1, "eo_gap": 0.4, "eodds_gap": 0.4},
        ),
        # Equal TPR 2/4; FPR 3/4 vs 0/4 dominates; selection 5/8 vs 2/8.
        (
            [[2, 3, 1, 2], [2, 0, 4, 2]],
            {"accuracy": 9 / 16, "sp_gap": 0.375, "eo_gap": 0.0, "eodds_gap": 0.75},
        ),
    ],
)
def test_population_metrics_hand_computed(
    counts: list[list[int]], expected: dict[str, float]
) -> None:
    assert population_metrics(np.array(counts)) == pytest.approx(expected)


def test_confusion_counts_rows_are_tp_fp_tn_fn_per_group() -> None:
    y_true = np.array([1, 0, 0, 1, 1, 1, 0])
    y_pred = np.array([1, 1, 0, 0, 1, 0, 1])
    group = np.array([0, 0, 0, 0, 1, 1, 1], dtype=bool)
    counts = confusion_counts(y_true, y_pred, group)
    assert counts.dtype == np.int64
    np.testing.assert_array_equal(counts, [[1, 1, 1, 1], [1, 1, 0, 1]])


@pytest.mark.filterwarnings("error")
def test_empty_group_gives_nan_gaps_and_correct_accuracy() -> None:
    metrics = population_metrics(np.array([[3, 1, 4, 2], [0, 0, 0, 0]]))
    assert metrics["accuracy"] == pytest.approx(0.7)
    assert all(math.isnan(metrics[gap]) for gap in GAPS)


@pytest.mark.filterwarnings("error")
def test_group_without_positives_gives_nan_eo_gaps_only() -> None:
    metrics = population_metrics(np.array([[3, 1, 4, 2], [0, 2, 3, 0]]))
    assert metrics["sp_gap"] == pytest.approx(0.0)
    assert math.isnan(metrics["eo_gap"]) and math.isnan(metrics["eodds_gap"])


@pytest.mark.filterwarnings("error")
def test_group_without_negatives_gives_nan_eodds_gap_only() -> None:
    metrics = population_metrics(np.array([[3, 1, 4, 2], [2, 0, 0, 3]]))
    assert metrics["eo_gap"] == pytest.approx(0.2)
    assert math.isnan(metrics["eodds_gap"])


def simulate(
    clusters: dict[int, dict[str, int | None]],
    models: tuple[str, ...] = ("deployed",),
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[tuple[str, int, str], dict[str, np.ndarray]]]:
    """Raw client predictions per (model, round, state) and the counts/clients frames they yield.

    State "WY" has only white members, so its race gaps are undefined; its absent non-white row
    must be read as an empty group.
    """
    rng = np.random.default_rng(seed)
    raw, count_rows, client_rows = {}, [], []
    for model in models:
        for round_, assignment in clusters.items():
            for state, cluster in assignment.items():
                n = int(rng.integers(20, 80))
                data = {name: rng.integers(0, 2, n) for name in ("y_true", "y_pred", "sex", "race")}
                if state == "WY":
                    data["race"][:] = 0
                data["loss"] = rng.random()
                raw[model, round_, state] = data
                key = {"model": model, "round": round_, "state": state, "cluster": cluster}
                client_rows.append({**key, "n": n, "loss": data["loss"]})
                for attribute, names in GROUPS.items():
                    counts = confusion_counts(data["y_true"], data["y_pred"], data[attribute])
                    for name, cells in zip(names, counts):
                        if cells.sum():
                            count_rows.append(
                                {**key, "attribute": attribute, "group": name,
                                 "n": int(cells.sum()), **dict(zip(CELLS, cells.tolist()))}
                            )
    return pd.DataFrame(count_rows), pd.DataFrame(client_rows), raw


def expected_metrics(parts: list[dict[str, np.ndarray]]) -> dict[tuple[str, str], float]:
    """Metrics of the union of clients' predictions, straight from fairlearn and scikit-learn."""
    keys = ("y_true", "y_pred", *GROUPS)
    data = {key: np.concatenate([part[key] for part in parts]) for key in keys}
    sizes = np.array([len(part["y_true"]) for part in parts])
    losses = np.array([part["loss"] for part in parts])
    out = {("", "accuracy"): accuracy_score(data["y_true"], data["y_pred"]),
           ("", "loss"): np.average(losses, weights=sizes)}
    for attribute in GROUPS:
        args = {"y_true": data["y_true"], "y_pred": data["y_pred"]}
        args["sensitive_features"] = data[attribute]
        out[attribute, "sp_gap"] = demographic_parity_difference(**args)
        out[attribute, "eodds_gap"] = equalized_odds_difference(**args)
        out[attribute, "eo_gap"] = MetricFrame(metrics=true_positive_rate, **args).difference()
    return out


def rows(frame: pd.DataFrame, round_: int, state: str) -> dict[tuple[str, str], float]:
    selected = frame[(frame["round"] == round_) & (frame["state"] == state)]
    return dict(zip(zip(selected["attribute"], selected["metric"]), selected["value"]))


MODELS = ("deployed", "global")
UNCLUSTERED = {round_: dict.fromkeys(("CA", "NY", "WY", "TX")) for round_ in (0, 1)}
CLUSTERED = {0: {"CA": 0, "NY": 1, "WY": 0, "TX": 1}, 1: {"CA": 1, "NY": 1, "WY": 0, "TX": 0}}


def test_all_row_equals_metrics_of_concatenated_predictions() -> None:
    counts, clients, raw = simulate(UNCLUSTERED)
    frame = metrics_frame(counts, clients)
    for round_ in (0, 1):
        parts = [raw["deployed", round_, state] for state in UNCLUSTERED[round_]]
        assert rows(frame, round_, "ALL") == pytest.approx(expected_metrics(parts))


def test_state_rows_match_their_own_predictions_and_empty_group_is_nan() -> None:
    counts, clients, raw = simulate(UNCLUSTERED)
    frame = metrics_frame(counts, clients)
    for state in UNCLUSTERED[0]:
        got, want = rows(frame, 0, state), expected_metrics([raw["deployed", 0, state]])
        if state == "WY":
            assert all(math.isnan(got.pop(("race", gap))) for gap in GAPS)
            want = {key: value for key, value in want.items() if key[0] != "race"}
        assert got == pytest.approx(want)


def test_mean_row_is_plain_and_size_weighted_mean_of_state_rows_skipping_nan() -> None:
    counts, clients, _ = simulate(UNCLUSTERED)
    frame = metrics_frame(counts, clients)
    states = frame[(frame["round"] == 1) & frame["state"].isin(list(UNCLUSTERED[1]))]
    sizes = clients[clients["round"] == 1].set_index("state")["n"]
    mean = rows(frame, 1, "MEAN")
    for (attribute, metric), group in states.groupby(["attribute", "metric"]):
        values = group.set_index("state")["value"].dropna()
        assert mean[attribute, metric] == pytest.approx(values.mean())
        weighted = np.average(values, weights=sizes[values.index])
        assert mean[attribute, f"{metric}_weighted"] == pytest.approx(weighted)
    race = states.loc[states["attribute"] == "race", "value"]
    assert race.notna().sum() == 3 * len(GAPS)  # WY's NaN race gaps were skipped
    assert mean["", "accuracy_weighted"] == pytest.approx(rows(frame, 1, "ALL")["", "accuracy"])


def test_cluster_rows_pool_only_members_of_that_round() -> None:
    counts, clients, raw = simulate(CLUSTERED)
    frame = metrics_frame(counts, clients)
    for round_, assignment in CLUSTERED.items():
        for cluster in (0, 1):
            members = [state for state, j in assignment.items() if j == cluster]
            selected = frame[(frame["round"] == round_) & (frame["state"] == f"cluster:{cluster}")]
            assert selected["cluster"].tolist() == [cluster] * len(selected)
            want = expected_metrics([raw["deployed", round_, state] for state in members])
            assert rows(frame, round_, f"cluster:{cluster}") == pytest.approx(want)
        states = frame[(frame["round"] == round_) & frame["state"].isin(list(assignment))]
        assert states["cluster"].tolist() == states["state"].map(assignment).tolist()


def test_unclustered_frame_has_no_cluster_rows_and_empty_cluster_ids() -> None:
    counts, clients, _ = simulate(UNCLUSTERED)
    frame = metrics_frame(counts, clients)
    assert not frame["state"].str.startswith("cluster:").any()
    assert frame["cluster"].isna().all()
    first_row = frame.head(1).to_csv(index=False).splitlines()[1]
    assert first_row.startswith("0,CA,,")  # a missing cluster is an empty CSV field


def test_model_column_prefixes_global_metrics() -> None:
    counts, clients, raw = simulate(UNCLUSTERED, models=MODELS)
    frame = metrics_frame(counts, clients)
    parts = {model: [raw[model, 0, state] for state in UNCLUSTERED[0]] for model in MODELS}
    got = rows(frame, 0, "ALL")
    for (attribute, metric), value in expected_metrics(parts["global"]).items():
        assert got[attribute, f"global_{metric}"] == pytest.approx(value)
    for key, value in expected_metrics(parts["deployed"]).items():
        assert got[key] == pytest.approx(value)
    assert ("", "global_accuracy_weighted") in rows(frame, 0, "MEAN")


def test_columns_and_attribute_empty_only_for_accuracy_and_loss() -> None:
    counts, clients, _ = simulate(CLUSTERED, models=MODELS)
    frame = metrics_frame(counts, clients)
    assert list(frame.columns) == ["round", "state", "cluster", "attribute", "metric", "value"]
    base = frame["metric"].str.removeprefix("global_").str.removesuffix("_weighted")
    assert ((frame["attribute"] == "") == base.isin(["accuracy", "loss"])).all()
    assert set(frame.loc[frame["attribute"] != "", "attribute"]) == set(GROUPS)


def test_row_order_is_round_then_given_states_all_mean_clusters() -> None:
    counts, clients, _ = simulate(CLUSTERED)
    frame = metrics_frame(counts, clients)
    expected_states = ["CA", "NY", "WY", "TX", "ALL", "MEAN", "cluster:0", "cluster:1"]
    for round_ in (0, 1):
        assert pd.unique(frame.loc[frame["round"] == round_, "state"]).tolist() == expected_states
    assert frame["round"].is_monotonic_increasing
    block = frame[(frame["round"] == 0) & (frame["state"] == "CA")]
    keys = list(zip(block["attribute"], block["metric"]))
    assert keys == sorted(keys)
