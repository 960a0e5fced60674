"""The fairness weight lambda of Fair-FCA: where its term must flip a client's choice, it does, at
exactly the weight the flip analysis names; and the study's lambda tables count what it changed."""

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from flwr.app import RecordDict

from analysis.compare import RunResults
from analysis.study_lambda import changed_choices, flip_lambdas, flip_table, lambda_table
from analysis.study_tables import Arm
from clients import kernels
from clients.data import state_data
from clients.job import ClientJob
from clients.shards import ClientId
from clients.sources import Source
from core.params import init_params, to_record
from fl_app.config import parse_config
from strategies.ifca import models_arrays, train_in_cluster


@pytest.fixture(scope="module")
def client_data():
    return state_data(Source("synthetic", "", ("AL",)), "income", ClientId("AL"), 0, 2000, encoding="paper")


@pytest.fixture(scope="module")
def candidates(client_data):
    """Cluster 0: a model trained on the client's data (lower loss, a sex gap); cluster 1: a constant
    predictor of the majority label (higher loss, no gap at all)."""
    train = client_data.train
    start = init_params(train.sparse.width, 32, 0)
    trained, _ = kernels.train_sgd(start, train.sparse, lr=0.1, epochs=3, batch_size=32, rng=np.random.default_rng(0))
    constant = {k: np.zeros_like(v) for k, v in start.items()}
    rate = float(train.y.mean())
    constant["fc2.bias"] = np.array([math.log(rate / (1 - rate))], np.float32)
    return [trained, constant]


def choose(client_data, candidates, weight: float) -> dict:
    config = parse_config({"strategy": "fair-ifca", "k": 2, "lambda": weight, "states": "AL",
                           "data-source": "synthetic", "synthetic-rows": 2000, "encoding": "paper", "lr": 0.1,
                           "local-epochs": 1})
    job = ClientJob(config, client_data, 0, 1, None)
    reply = train_in_cluster(job, RecordDict({"arrays": to_record(models_arrays(candidates))}))
    return reply.metrics


def flip_weight(metrics: dict) -> float:
    frame = pd.DataFrame([{"loss_0": metrics["losses"][0], "loss_1": metrics["losses"][1],
                           "gap_0": metrics["gaps"][0], "gap_1": metrics["gaps"][1]}])
    return float(flip_lambdas(frame)[0])


def test_the_loss_alone_picks_the_trained_model_whose_gap_is_larger(client_data, candidates):
    metrics = choose(client_data, candidates, 0.0)
    assert metrics["cluster"] == 0
    assert metrics["losses"][0] < metrics["losses"][1] and metrics["gaps"][0] > metrics["gaps"][1] == 0.0


def test_a_weight_just_above_the_flip_point_picks_the_fair_model_and_just_below_does_not(client_data, candidates):
    needed = flip_weight(choose(client_data, candidates, 0.0))
    assert 0.1 < needed < 100
    assert choose(client_data, candidates, needed * 1.001)["cluster"] == 1
    assert choose(client_data, candidates, needed * 0.999)["cluster"] == 0


def test_no_weight_flips_a_choice_whose_loss_best_model_also_has_the_smallest_gap():
    frame = pd.DataFrame({"loss_0": [0.5, 0.5], "loss_1": [0.6, 0.6], "gap_0": [0.3, 0.1], "gap_1": [0.1, 0.2]})
    assert flip_lambdas(frame).tolist() == [pytest.approx(0.5), math.inf]


def run(tmp: Path, strategy: str, seed: int, weight: float | None, choices: list[int], accuracy: float) -> RunResults:
    """A made-up completed run: 2 rounds x 2 clients of cluster choices and one MEAN accuracy."""
    settings = {"strategy": strategy, "k": 2, **({"lambda": weight} if weight is not None else {})}
    config = {"config": settings, "seed": seed, "data": {"source": "synthetic", "path": "", "states": ["AL", "WY"]}}
    metrics = pd.DataFrame([[r, "MEAN", "", "accuracy", accuracy] for r in (1, 2)],
                           columns=["round", "state", "attribute", "metric", "value"])
    clusters = pd.DataFrame({"round": [1, 1, 2, 2], "state": ["AL", "WY"] * 2, "cluster": choices,
                             "loss_0": 0.5, "loss_1": 0.6, "gap_0": 0.3, "gap_1": 0.1})
    return RunResults(tmp, config, pd.DataFrame(), metrics, {}, clusters)


def test_the_changed_share_counts_client_rounds_against_lambda_zero(tmp_path):
    zero = Arm("fair-ifca", "lambda=0", {0: run(tmp_path, "fair-ifca", 0, 0.0, [0, 0, 0, 0], 0.8)})
    one = Arm("fair-ifca", "lambda=1", {0: run(tmp_path, "fair-ifca", 0, 1.0, [0, 1, 0, 1], 0.7)})
    assert changed_choices(one, zero) == (0.5, 4)


def test_the_lambda_table_takes_the_base_strategy_as_lambda_zero_when_its_settings_match(tmp_path):
    arms = [Arm("ifca", "-", {s: run(tmp_path, "ifca", s, None, [0, 0, 0, 0], 0.8) for s in (0, 1)}),
            Arm("fair-ifca", "lambda=2", {s: run(tmp_path, "fair-ifca", s, 2.0, [1, 0, 0, 0], 0.7) for s in (0, 1)})]
    table = lambda_table(arms, "final")
    accuracy = table[table["metric"] == "accuracy"].set_index("lambda")
    assert accuracy["changed_share"].tolist() == [0.0, 0.25]
    assert accuracy["mean"].tolist() == pytest.approx([0.8, 0.7])
    assert accuracy["client_rounds"].tolist() == [8, 8]


def test_the_flip_table_names_the_weight_that_would_flip_the_choices(tmp_path):
    zero = Arm("fair-ifca", "lambda=0", {0: run(tmp_path, "fair-ifca", 0, 0.0, [0, 0, 0, 0], 0.8)})
    row = flip_table(zero).iloc[0]
    assert (row["client_rounds"], row["flippable_share"]) == (4, 1.0)
    assert row["loss_margin_median"] == pytest.approx(0.1) and row["gap_margin_median"] == pytest.approx(0.2)
    assert row["flip_lambda_median"] == pytest.approx(0.5)
