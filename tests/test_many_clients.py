"""Federations of sub-state clients run in process: 3 states x 4 shards through the real strategies."""

import json

import pandas as pd
import pytest

from fl_app import check
from strategies.loop import FederationSizeError

STATES = ["AL", "CA", "WY"]
LABELS = [f"{s}-{j}" for s in STATES for j in range(4)]
SETTINGS = {"states": ",".join(STATES), "data-source": "synthetic", "synthetic-rows": 800, "lr": 0.1,
            "local-epochs": 1, "num-server-rounds": 2, "clients-per-state": 4}


def client_rows(results, name="metrics.csv", metric="accuracy"):
    frame = pd.read_csv(results / name, keep_default_na=False)
    return frame[(frame["metric"] == metric) & frame["state"].isin(LABELS)] if name == "metrics.csv" else frame


@pytest.mark.parametrize("strategy", ["fedavg", "ifca"])
def test_every_round_has_one_row_per_shard_client(federation, tmp_path, strategy):
    rows = client_rows(federation({**SETTINGS, "strategy": strategy}, tmp_path / strategy))
    assert [sorted(rows[rows["round"] == r]["state"]) for r in (1, 2)] == [LABELS, LABELS]


def test_ifca_assigns_every_shard_client_a_cluster(federation, tmp_path):
    clusters = client_rows(federation({**SETTINGS, "strategy": "ifca"}, tmp_path / "r"), "clusters.csv")
    assert sorted(clusters[clusters["round"] == 2]["state"]) == LABELS


def test_the_shards_pool_to_the_states_test_sets(federation, tmp_path):
    split = client_rows(federation(SETTINGS, tmp_path / "split"), "counts.csv")
    whole = client_rows(federation({**SETTINGS, "clients-per-state": 1}, tmp_path / "whole"), "counts.csv")
    pooled = [frame.groupby(["round", "attribute", "group"])["n"].sum() for frame in (split, whole)]
    assert pooled[0].equals(pooled[1]) and pooled[0].iloc[0] > 0


def test_a_federation_of_the_wrong_size_is_a_clear_error(federation, tmp_path):
    with pytest.raises(FederationSizeError, match=r"3 SuperNodes .* x 4 clients-per-state = 12 clients"):
        federation(SETTINGS, tmp_path / "r", num_nodes=3)


def test_the_preflight_check_counts_states_times_shards(tmp_path, capsys):
    config = f'states="AL,CA,WY" data-source="synthetic" clients-per-state=4 results-dir="{tmp_path / "r"}"'
    assert check.main(["--run-config", config]) == 0
    assert json.loads(capsys.readouterr().out)["num_clients"] == 12
