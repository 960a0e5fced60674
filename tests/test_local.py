"""Local training: every client keeps and deploys its own model; nothing is ever averaged."""

from functools import partial

import numpy as np
import pandas as pd
from flwr.app import MetricRecord

from clients.local import fault_strikes
from clients.shards import ClientId
from clients.sources import Source
from core.params import init_params
from fl_app.config import parse_config
from strategies.algorithm import ServerSetup
from strategies.local import Local, keep_or_replace
from strategies.replies import Update

STATES = ("AL", "CA", "WY")
SETTINGS = {"strategy": "local", "states": ",".join(STATES), "data-source": "synthetic", "synthetic-rows": 1500,
            "num-server-rounds": 4, "local-epochs": 2, "lr": 0.3, "batch-size": 16}


def server(strategy: str = "local", **keys) -> Local:
    config = parse_config({"strategy": strategy, "seed": 3, **keys})
    return Local(ServerSetup(config, STATES, Source("synthetic", "", STATES), partial(init_params, 6, 4)))


def update(client: int, seed: int, weight: float = 100.0) -> Update:
    return Update(client, init_params(6, 4, seed), weight, MetricRecord({}))


def equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_a_client_that_sent_no_update_keeps_its_model_and_the_others_take_theirs():
    personal = {0: init_params(6, 4, 0), 1: init_params(6, 4, 1)}
    new = {1: init_params(6, 4, 9)}
    kept = keep_or_replace(personal, new)
    assert kept[0] is personal[0] and kept[1] is new[1]


def test_every_client_starts_from_the_runs_seeded_initial_model():
    algorithm = server()
    assert all(equal(algorithm.train_payload(1, c).arrays, init_params(6, 4, 3)) for c in range(3))


def test_each_client_is_sent_its_own_update_unaveraged_and_a_failed_one_its_previous_model():
    algorithm = server()
    algorithm.aggregate(1, [update(0, 10), update(1, 11), update(2, 12)])
    algorithm.aggregate(2, [update(0, 20, weight=1.0), update(2, 22, weight=1e6)])  # client 1 failed round 2
    sent = [algorithm.train_payload(3, c).arrays for c in range(3)]
    assert equal(sent[0], init_params(6, 4, 20)) and equal(sent[2], init_params(6, 4, 22))
    assert equal(sent[1], init_params(6, 4, 11))
    assert all(equal(algorithm.evaluate_payload(3, c).arrays, sent[c]) for c in range(3))


def test_the_checkpoint_state_restores_every_clients_model_by_label():
    algorithm = server()
    algorithm.aggregate(1, [update(0, 10), update(2, 12)])
    arrays, state = algorithm.state()
    assert sorted({k.split(".")[0] for k in arrays}) == list(STATES)
    fresh = server()
    fresh.restore(arrays, state)
    assert all(equal(fresh.train_payload(2, c).arrays, algorithm.train_payload(2, c).arrays) for c in range(3))


def test_a_local_run_equals_each_state_training_alone(federation, tmp_path):
    """Nothing crosses between clients: a client's results do not depend on who else is in the run."""
    together = pd.read_csv(federation(SETTINGS, tmp_path / "all") / "counts.csv")
    alone = pd.read_csv(federation({**SETTINGS, "states": "CA"}, tmp_path / "ca") / "counts.csv")
    pd.testing.assert_frame_equal(together[together["state"] == "CA"].reset_index(drop=True), alone)


def test_a_failing_client_keeps_its_model_and_is_counted(federation, tmp_path):
    settings = {**SETTINGS, "fail-prob": 0.4, "seed": 2}
    metrics = pd.read_csv(federation(settings, tmp_path / "r") / "metrics.csv", keep_default_na=False)
    states = metrics[metrics["state"].isin(STATES)].set_index(["round", "state", "attribute", "metric"])["value"]
    failed = {(r, s): fault_strikes(2, ClientId(s), r, (), 0.4) for r in range(1, 5) for s in STATES}
    checked = 0
    for (r, s), strikes in failed.items():
        if strikes and r > 1:
            assert states.xs((r, s)).equals(states.xs((r - 1, s))), (r, s)
            checked += 1
        elif r > 1:
            assert not states.xs((r, s)).equals(states.xs((r - 1, s))), (r, s)
    counted = metrics[(metrics["state"] == "ALL") & (metrics["metric"] == "failed_clients")].sort_values("round")
    assert counted["value"].tolist() == [float(sum(failed[r, s] for s in STATES)) for r in range(1, 5)]
    assert checked > 0
