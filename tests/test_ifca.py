"""IFCA and Fair-FCA: cluster choice, per-cluster averaging, recovery of a true partition."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

from core.params import init_params
from strategies.ifca import aggregate_clusters, choose_cluster, cluster_seeds, perturbed_copies


def model(value: float) -> dict[str, np.ndarray]:
    return {"w": np.full(3, value, dtype=np.float32)}


def test_choice_is_the_lowest_loss():
    assert choose_cluster(np.array([0.7, 0.3, 0.5])) == 1


def test_ties_go_to_the_first_cluster():
    assert choose_cluster(np.array([0.4, 0.4])) == 0


def test_fairness_term_can_move_the_choice():
    losses, gaps = np.array([0.30, 0.32]), np.array([0.20, 0.05])
    assert (choose_cluster(losses, gaps, 0.0), choose_cluster(losses, gaps, 1.0)) == (0, 1)


def test_nan_gap_adds_nothing():
    assert choose_cluster(np.array([0.30, 0.32]), np.array([np.nan, 0.0]), 5.0) == 0


def test_clusters_average_only_their_members_weighted_by_examples():
    new = aggregate_clusters([model(0), model(0)], [model(1), model(3), model(10)], [1, 3, 2], [0, 0, 1])
    assert new[0]["w"].tolist() == [2.5] * 3 and new[1]["w"].tolist() == [10.0] * 3


def test_a_cluster_nobody_chose_keeps_its_model():
    new = aggregate_clusters([model(5), model(7)], [model(1)], [4], [0])
    assert new[1]["w"].tolist() == [7.0] * 3


def test_initial_clusters_are_distinct_and_reproducible():
    a, b = ([init_params(101, 32, s) for s in cluster_seeds(0, 2)] for _ in range(2))
    assert np.array_equal(a[1]["fc1.weight"], b[1]["fc1.weight"])
    assert not np.array_equal(a[0]["fc1.weight"], a[1]["fc1.weight"])


def test_warm_start_copies_differ_slightly():
    copies = perturbed_copies(model(1.0), k=2, seed=0)
    diff = np.abs(copies[0]["w"] - copies[1]["w"])
    assert 0 < diff.max() < 0.1


NORMAL, REVERSED = ["AL", "CA", "OH"], ["TX", "VT", "WA"]
SETTINGS = {"states": ",".join(NORMAL + REVERSED), "synthetic-reversed": ",".join(REVERSED),
            "data-source": "synthetic", "synthetic-rows": 2000, "lr": 0.1, "local-epochs": 2,
            "num-server-rounds": 4, "warmup-rounds": 1}


def test_ifca_recovers_two_reversed_populations(federation, tmp_path):
    results = federation({**SETTINGS, "strategy": "ifca"}, tmp_path / "ifca")
    clusters = pd.read_csv(results / "clusters.csv")
    last = clusters[clusters["round"] == clusters["round"].max()].set_index("state")
    truth = [int(s in REVERSED) for s in last.index]
    assert adjusted_rand_score(truth, last["cluster"]) == 1.0


def test_clusters_file_has_every_models_loss(federation, tmp_path):
    results = federation({**SETTINGS, "strategy": "ifca", "num-server-rounds": 2}, tmp_path / "ifca")
    clusters = pd.read_csv(results / "clusters.csv")
    assert list(clusters.columns) == ["round", "state", "cluster", "loss_0", "loss_1"]
    assert len(clusters) == 6  # round 1 is warm-up FedAvg; round 2 is clustered
    chosen = clusters[["loss_0", "loss_1"]].to_numpy().argmin(axis=1)
    assert (chosen == clusters["cluster"]).all()


def test_cluster_rows_pool_their_members(federation, tmp_path):
    results = federation({**SETTINGS, "strategy": "ifca", "num-server-rounds": 2}, tmp_path / "ifca")
    metrics = pd.read_csv(results / "metrics.csv", keep_default_na=False)
    last = metrics[(metrics["round"] == 2) & (metrics["metric"] == "accuracy")]
    members = last[last["state"].isin(NORMAL + REVERSED)]
    assert {f"cluster:{c}" for c in members["cluster"]} == set(last[last["state"].str.startswith("cluster:")]["state"])


def test_fair_ifca_with_lambda_zero_reproduces_ifca(federation, tmp_path):
    settings = {**SETTINGS, "num-server-rounds": 3}
    ifca = federation({**settings, "strategy": "ifca"}, tmp_path / "ifca")
    fair = federation({**settings, "strategy": "fair-ifca", "lambda": 0.0}, tmp_path / "fair")
    for name in ("metrics.csv", "counts.csv"):
        assert (ifca / name).read_text() == (fair / name).read_text(), name
    choices = pd.read_csv(ifca / "clusters.csv")
    pd.testing.assert_frame_equal(pd.read_csv(fair / "clusters.csv")[choices.columns], choices)


def test_fair_ifca_records_the_gaps_its_choice_used(federation, tmp_path):
    fair = pd.read_csv(federation({**SETTINGS, "strategy": "fair-ifca", "lambda": 1.0}, tmp_path / "fair") / "clusters.csv")
    assert list(fair.columns) == ["round", "state", "cluster", "loss_0", "loss_1", "gap_0", "gap_1"]
    score = fair[["loss_0", "loss_1"]].to_numpy() + fair[["gap_0", "gap_1"]].fillna(0).to_numpy()
    assert (score.argmin(axis=1) == fair["cluster"]).all()


def test_ifca_refuses_a_fairness_weight(federation, tmp_path):
    with pytest.raises(ValueError, match="config key 'lambda' belongs to strategy fair-ifca, fair-flhc, not 'ifca'"):
        federation({**SETTINGS, "strategy": "ifca", "lambda": 0.5}, tmp_path / "x")
