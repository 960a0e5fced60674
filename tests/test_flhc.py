"""FL+HC and Fair-FL+HC: the clustering core on made-up updates, the server half, and whole runs."""

import json
import subprocess
import sys
from functools import partial

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import pdist
from sklearn.metrics import adjusted_rand_score

from clients.data import Split, state_data
from clients.local import score_models
from clients.shards import ClientId
from clients.sources import Source
from core.params import PARAM_KEYS, init_params
from core.settings import ConfigError
from core.tasks import task_for
from fl_app.config import parse_config
from recorder.checkpoint import CHECKPOINT_FILE
from strategies.algorithm import ServerSetup
from strategies.flhc import FLHC, cluster_labels, complete_assignment, update_distances, update_matrix
from strategies.replies import Update
from tests.conftest import REPO, run_in_process, run_sh
from tests.dense_training import train_sgd
from tests.test_resume import killed_in_process

# --- the clustering core ------------------------------------------------------------------------

def reversed_federation_updates(clients: int = 8, seed: int = 0) -> tuple[np.ndarray, list[int]]:
    """One epoch of local SGD from a common model on each client's data, where the second half
    of the clients has the labels of the first half's rule reversed; the flattened deltas."""
    rng = np.random.default_rng(seed)
    rule = rng.normal(size=6)
    start = init_params(6, 4, seed)
    trained, truth = [], []
    for c in range(clients):
        x = rng.normal(size=(400, 6)).astype(np.float32)
        flipped = c >= clients // 2
        y = ((x @ rule > 0) != flipped).astype(np.float32)
        split = Split(x, y, {"sex": np.zeros(400, np.int64)})
        params, _ = train_sgd(start, split.x, split.y, lr=0.1, epochs=1, batch_size=32, rng=np.random.default_rng([seed, c]))
        trained.append(params)
        truth.append(int(flipped))
    return update_matrix(trained, start), truth


@pytest.mark.parametrize("linkage", ["ward", "single", "complete", "average"])
def test_two_clusters_separate_a_federation_with_reversed_labels_exactly(linkage):
    deltas, truth = reversed_federation_updates()
    labels = cluster_labels(update_distances(deltas), linkage, k=2)
    assert adjusted_rand_score(truth, labels) == 1.0


def test_updates_are_flattened_float64_deltas_in_key_order():
    reference = {"b": np.array([1.0], np.float32), "a": np.array([[0.5, 0.25]], np.float32)}
    model = {"b": np.array([3.0], np.float32), "a": np.array([[1.5, 0.0]], np.float32)}
    deltas = update_matrix([model, reference], reference)
    assert deltas.dtype == np.float64 and deltas.tolist() == [[1.0, -0.25, 2.0], [0.0, 0.0, 0.0]]


def test_cluster_ids_follow_the_order_of_first_appearance():
    points = np.array([[10.0], [0.0], [10.1], [0.1]])
    assert cluster_labels(pdist(points), "ward", k=2).tolist() == [0, 1, 0, 1]


def test_a_distance_threshold_cuts_the_tree_instead_of_k():
    points = np.array([[0.0], [0.1], [5.0], [5.1], [20.0]])
    assert cluster_labels(pdist(points), "single", threshold=1.0).tolist() == [0, 0, 1, 1, 2]


def test_k_is_at_most_the_number_of_clusters():
    assert cluster_labels(pdist(np.array([[0.0], [1.0]])), "average", k=5).tolist() == [0, 1]


def test_fair_distance_is_the_update_distance_over_its_median_plus_lambda_times_the_gap_difference():
    deltas = np.array([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])  # pairwise 5, 10, 5: median s = 5
    gaps = np.array([0.1, 0.3, 0.0])                          # pairwise 0.2, 0.1, 0.3
    # d(0,1) = 5/5 + 2 * 0.2, d(0,2) = 10/5 + 2 * 0.1, d(1,2) = 5/5 + 2 * 0.3; the server clusters s * d
    np.testing.assert_allclose(update_distances(deltas, gaps, lam=2.0), 5 * np.array([1.4, 2.2, 1.6]))


def test_lambda_zero_keeps_the_euclidean_distances_bit_for_bit():
    deltas, _ = reversed_federation_updates(clients=4)
    assert np.array_equal(update_distances(deltas, np.array([0.1, np.nan, 0.3, 0.0]), lam=0.0), pdist(deltas))


def test_a_nan_gap_adds_nothing():
    deltas = np.array([[0.0], [1.0], [2.0]])  # median 1
    assert update_distances(deltas, np.array([np.nan, 0.5, 0.0]), lam=1.0).tolist() == [1.0, 2.0, 1.5]


def test_the_fairness_term_can_move_the_clustering():
    deltas = np.array([[0.0], [1.0], [10.0], [11.0]])
    gaps = np.array([0.0, 0.5, 0.0, 0.5])
    plain = cluster_labels(update_distances(deltas, gaps, 0.0), "average", k=2)
    fair = cluster_labels(update_distances(deltas, gaps, 100.0), "average", k=2)
    assert (plain.tolist(), fair.tolist()) == ([0, 0, 1, 1], [0, 1, 0, 1])


def test_a_client_without_update_joins_the_largest_cluster():
    assert complete_assignment({0: 0, 1: 1, 3: 1}, 4) == {0: 0, 1: 1, 2: 1, 3: 1}


def test_equally_large_clusters_give_the_lowest_id():
    assert complete_assignment({0: 1, 2: 0}, 3) == {0: 1, 1: 0, 2: 0}


# --- the server half, from made-up updates ------------------------------------------------------

STATES = ("AL", "CA", "OH", "TX", "WY")


def server(**keys) -> FLHC:
    config = parse_config({"strategy": "flhc", "states": ",".join(STATES), "num-server-rounds": 4,
                           "warmup-rounds": 1, **keys})
    return FLHC(ServerSetup(config, STATES, Source("synthetic", "", STATES), partial(init_params, 6, 4)))


def shifted(model: dict, by: float) -> dict:
    return {k: (v + by).astype(np.float32) for k, v in model.items()}


def updates(algorithm: FLHC, server_round: int, shifts: dict[int, float]) -> list[Update]:
    """Each listed client's update: the model it was sent, shifted by a constant."""
    sent = {c: algorithm.train_payload(server_round, c).arrays for c in shifts}
    return [Update(c, shifted(sent[c], s), 100.0, {}) for c, s in shifts.items()]


def test_the_clustering_round_assigns_every_client_and_starts_each_cluster_from_the_fedavg_model():
    algorithm = server()
    rows = algorithm.aggregate(1, updates(algorithm, 1, {0: 1.0, 1: 1.1, 2: -1.0, 3: -1.1}))  # WY (4) failed
    assert [(r["state"], r["cluster"], r["assigned_by"]) for r in rows] == [
        ("AL", 0, "update"), ("CA", 0, "update"), ("OH", 1, "update"), ("TX", 1, "update"),
        ("WY", 0, "largest-cluster")]
    start = init_params(6, 4, 0)
    for c in range(5):
        np.testing.assert_allclose(algorithm.evaluate_payload(1, c).arrays["fc1.bias"], start["fc1.bias"], atol=1e-6)
    assert algorithm.clusters() == {0: 0, 1: 0, 2: 1, 3: 1, 4: 0}


def test_after_clustering_each_cluster_averages_only_its_members():
    algorithm = server()
    algorithm.aggregate(1, updates(algorithm, 1, {0: 1.0, 1: 1.1, 2: -1.0, 3: -1.1, 4: 1.05}))
    start = algorithm.train_payload(2, 0).arrays["fc2.bias"]
    assert algorithm.aggregate(2, updates(algorithm, 2, {0: 0.2, 1: 0.4, 2: -0.2})) is None
    np.testing.assert_allclose(algorithm.train_payload(2, 4).arrays["fc2.bias"], start + 0.3, atol=1e-6)
    np.testing.assert_allclose(algorithm.evaluate_payload(2, 3).arrays["fc2.bias"], start - 0.2, atol=1e-6)


def test_clustering_waits_for_two_usable_updates():
    algorithm = server()
    assert algorithm.aggregate(1, updates(algorithm, 1, {2: 1.0})) is None and algorithm.clusters() == {}
    assert len(algorithm.aggregate(2, updates(algorithm, 2, {0: 1.0, 2: -1.0}))) == 5


def test_state_and_restore_continue_with_the_same_clusters_and_models():
    algorithm = server()
    algorithm.aggregate(1, updates(algorithm, 1, {0: 1.0, 1: 1.1, 2: -1.0, 3: -1.1}))
    algorithm.aggregate(2, updates(algorithm, 2, {0: 0.2, 2: -0.2}))
    arrays, state = algorithm.state()
    restored = server()
    restored.restore(arrays, json.loads(json.dumps(state)))
    assert restored.clusters() == algorithm.clusters()
    for c in range(5):
        for key in PARAM_KEYS:
            assert np.array_equal(restored.train_payload(3, c).arrays[key], algorithm.train_payload(3, c).arrays[key])


# --- whole runs over the in-process federation ----------------------------------------------------

NORMAL, REVERSED = ["AL", "CA", "OH"], ["TX", "VT", "WA"]
SETTINGS = {"states": ",".join(NORMAL + REVERSED), "synthetic-reversed": ",".join(REVERSED),
            "data-source": "synthetic", "synthetic-rows": 2000, "lr": 0.1, "local-epochs": 2,
            "num-server-rounds": 3, "warmup-rounds": 2}


@pytest.fixture(scope="module")
def flhc_run(tmp_path_factory):
    return run_in_process({**SETTINGS, "strategy": "flhc"}, tmp_path_factory.mktemp("flhc") / "r")


def test_flhc_recovers_two_reversed_populations(flhc_run):
    clusters = pd.read_csv(flhc_run / "clusters.csv")
    assert list(clusters.columns) == ["round", "state", "cluster", "assigned_by"]
    assert set(clusters["round"]) == {2} and sorted(clusters["state"]) == sorted(NORMAL + REVERSED)
    assert adjusted_rand_score([s in REVERSED for s in clusters["state"]], clusters["cluster"]) == 1.0


def test_clients_deploy_their_cluster_from_the_clustering_round_on(flhc_run):
    metrics = pd.read_csv(flhc_run / "metrics.csv", keep_default_na=False)
    accuracy = metrics[(metrics["metric"] == "accuracy") & metrics["state"].isin(NORMAL + REVERSED)]
    chosen = pd.read_csv(flhc_run / "clusters.csv").set_index("state")["cluster"]
    assert (accuracy[accuracy["round"] == 1]["cluster"] == "").all()
    for r in (2, 3):
        deployed = accuracy[accuracy["round"] == r].set_index("state")["cluster"].astype(int)
        assert deployed.to_dict() == chosen.to_dict()
    assert {"cluster:0", "cluster:1"} <= set(metrics[metrics["round"] == 3]["state"])


def test_fair_flhc_with_lambda_zero_reproduces_flhc(flhc_run, federation, tmp_path):
    fair = federation({**SETTINGS, "strategy": "fair-flhc", "lambda": 0.0}, tmp_path / "fair")
    for name in ("metrics.csv", "counts.csv"):
        assert (fair / name).read_text() == (flhc_run / name).read_text(), name
    without_gaps = pd.read_csv(fair / "clusters.csv").drop(columns="gap").to_csv(index=False)
    assert without_gaps == (flhc_run / "clusters.csv").read_text()


def test_fair_flhc_records_each_clients_gap_under_the_model_it_received(federation, tmp_path):
    settings = {**SETTINGS, "strategy": "fair-flhc", "lambda": 1.0, "warmup-rounds": 1, "num-server-rounds": 2,
                "fair-attribute": "race", "fair-metric": "eo"}
    clusters = pd.read_csv(federation(settings, tmp_path / "fair") / "clusters.csv").set_index("state")
    task = task_for("income", "grouped")
    received = init_params(task.width, task.hidden, 0)  # round 1 sends the initial model
    for state in ("AL", "WA"):
        train = state_data(Source("synthetic", "", tuple(settings["states"].split(","))), "income", ClientId(state), 0,
                           2000, tuple(REVERSED)).train
        assert clusters.loc[state, "gap"] == pytest.approx(score_models([received], train, "race", "eo")[1][0])


@pytest.mark.parametrize("mode", ["train-error", "nan-update"])
def test_a_client_without_update_in_the_clustering_round_joins_the_largest_cluster(mode, federation, tmp_path):
    results = federation({**SETTINGS, "strategy": "flhc", "fail-states": "CA", "fail-mode": mode}, tmp_path / "r")
    clusters = pd.read_csv(results / "clusters.csv").set_index("state")
    metrics = pd.read_csv(results / "metrics.csv", keep_default_na=False)
    counted = "failed_clients" if mode == "train-error" else "rejected_updates"
    counts = metrics[(metrics["state"] == "ALL") & (metrics["metric"] == counted)]["value"].astype(float)
    assert counts.tolist() == [1.0, 1.0, 1.0]
    assert clusters.loc["CA", "assigned_by"] == "largest-cluster"
    sizes = clusters.drop(index="CA")["cluster"].value_counts()
    assert sizes.max() > sizes.min() and clusters.loc["CA", "cluster"] == sizes.idxmax()
    assert sorted(metrics["round"].unique()) == [1, 2, 3]


# --- resume after a kill ---------------------------------------------------------------------------

RESUMED = {**SETTINGS, "strategy": "flhc", "num-server-rounds": 4, "fail-prob": 0.3, "local-epochs": 1}
FILES = ("metrics.csv", "counts.csv", "clusters.csv")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    return run_in_process(RESUMED, tmp_path_factory.mktemp("flhc-whole") / "r")


@pytest.mark.parametrize(("name", "nth"), [
    ("clusters.csv", 1),     # the clustering round half written: resumes from the warm-up's checkpoint
    (CHECKPOINT_FILE, 3),    # round 3 written, its checkpoint not: resumes from the clustered round 2
])
def test_a_killed_flhc_run_resumes_to_the_uninterrupted_results(name, nth, tmp_path, federation, uninterrupted):
    results = tmp_path / "r"
    killed_in_process(RESUMED, results, name, nth)
    federation({**RESUMED, "resume": str(results)}, results)
    for file in FILES:
        assert (results / file).read_text() == (uninterrupted / file).read_text(), file
    assert sorted(p.name for p in results.iterdir()) == sorted(p.name for p in uninterrupted.iterdir())


# --- bad input, before training ----------------------------------------------------------------------

BASE = {"strategy": "flhc", "states": "AL,CA", "data-source": "synthetic", "synthetic-rows": 200,
        "num-server-rounds": 3, "warmup-rounds": 1, "local-epochs": 1}


@pytest.mark.parametrize(("keys", "message"), [
    ({"k": 3}, "config key 'k' (3) must not exceed the number of clients (2: states x clients-per-state)"),
    ({"warmup-rounds": 3}, "config key 'warmup-rounds' (3) must be smaller than 'num-server-rounds' (3)"),
    ({"warmup-rounds": 0}, "config key 'warmup-rounds' must be >= 1 for flhc: it clusters the updates of the last "
                           "warm-up round, got 0 (the study's setting is 3)"),
    ({"k": 1, "distance-threshold": 0.5}, "config keys 'k' (1) and 'distance-threshold' (0.5) both set the number "
                                          "of clusters; give only one"),
    ({"linkage": "centroid"}, "unknown linkage 'centroid'; valid choices: ward, single, complete, average"),
    ({"distance-threshold": -1.0}, "config key 'distance-threshold' must be >= 0, got -1"),
    ({"strategy": "fair-flhc", "fair-metric": "acc"}, "unknown fair-metric 'acc'; valid choices: sp, eo, eodds"),
    ({"strategy": "ifca", "linkage": "single"}, "config key 'linkage' belongs to strategy flhc, fair-flhc, not 'ifca'"),
])
def test_bad_flhc_config_is_named_before_training(keys, message, federation, tmp_path):
    with pytest.raises(ConfigError) as err:
        federation({**BASE, **keys}, tmp_path / "results")
    assert message in str(err.value)
    assert not (tmp_path / "results").exists()


def test_the_paper_preset_gives_flhc_its_warm_up_and_leaves_fair_flhc_its_weight():
    plain, fair = (parse_config({"strategy": s, "preset": "paper"}) for s in ("flhc", "fair-flhc"))
    assert (plain.lr, plain.local_epochs, plain.params.warmup_rounds) == (0.05, 1, 3)
    assert (fair.params.warmup_rounds, fair.params.fair_lambda) == (3, 0.0)


def test_the_preflight_check_refuses_more_clusters_than_clients(tmp_path):
    results = tmp_path / "never"
    proc = subprocess.run([sys.executable, "-m", "fl_app.check", "--run-config",
                           f'strategy="flhc" states="AL,CA" data-source="synthetic" num-server-rounds=3 '
                           f'warmup-rounds=1 k=3 results-dir="{results}"'],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "config key 'k' (3) must not exceed the number of clients (2" in proc.stderr
    assert not results.exists()


# --- the real thing: `./run.sh run` (flwr run) --------------------------------------------------------

E2E_STATES = ["AL", "CA", "WY"]


@pytest.mark.parametrize(("strategy", "keys"), [
    ("flhc", ""),
    ("fair-flhc", 'lambda=0.5 fair-attribute="race" fair-metric="eodds" linkage="average"'),
])
def test_flhc_runs_through_flwr_run(strategy, keys, tmp_path):
    results = tmp_path / strategy
    proc = run_sh("run", "--run-config",
                  f'strategy="{strategy}" states="{",".join(E2E_STATES)}" data-source="synthetic" synthetic-rows=1500 '
                  f'num-server-rounds=3 warmup-rounds=1 local-epochs=1 lr=0.05 results-dir="{results}" {keys}')
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    clusters = pd.read_csv(results / "clusters.csv")
    assert sorted(clusters["state"]) == E2E_STATES and set(clusters["round"]) == {1}
    assert ("gap" in clusters.columns) == (strategy == "fair-flhc")
    metrics = pd.read_csv(results / "metrics.csv", keep_default_na=False)
    assert any(s.startswith("cluster:") for s in metrics[metrics["round"] == 3]["state"])
    assert json.loads((results / "summary.json").read_text())["strategy"] == strategy
