"""The paper's setup as config: encoding, sampled partition with validation, and the `paper` preset."""

import json

import pandas as pd
import pytest

from fl_app.config import ConfigError, parse_config

SETTINGS = {"states": "AL,CA,WY", "data-source": "synthetic", "synthetic-rows": 1200, "num-server-rounds": 2,
            "local-epochs": 1, "lr": 0.1, "batch-size": 16}
PARTITION = {"train-rows": 100, "test-rows": 120, "val-rows": 150}


def test_the_paper_preset_sets_encoding_partition_and_the_strategys_study_settings():
    config = parse_config({"strategy": "ifca", "preset": "paper"})
    assert (config.encoding, config.train_rows, config.test_rows, config.val_rows) == ("paper", 1000, 2000, 2000)
    assert (config.lr, config.local_epochs) == (0.05, 1)


def test_keys_given_away_from_their_default_override_the_preset():
    config = parse_config({"strategy": "fedavg", "preset": "paper", "lr": 0.01, "train-rows": 500})
    assert (config.lr, config.train_rows, config.local_epochs, config.encoding) == (0.01, 500, 10, "paper")


@pytest.mark.parametrize(("raw", "message"), [
    ({"encoding": "onehot"}, "unknown encoding 'onehot'; valid choices: grouped, paper"),
    ({"preset": "icml"}, "unknown preset 'icml'; valid choices: , paper"),
    ({"train-rows": -1}, "config key 'train-rows' must be >= 0, got -1"),
    ({"train-rows": 0, "test-rows": 100}, "'train-rows' (0) and 'test-rows' (100) must both be > 0"),
])
def test_bad_partition_or_preset_is_named(raw, message):
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    assert message in str(err.value)


def test_validation_rows_are_written_every_round_beside_the_test_rows(federation, tmp_path):
    results = federation({**SETTINGS, **PARTITION}, tmp_path / "r")
    val = pd.read_csv(results / "val_metrics.csv", keep_default_na=False)
    test = pd.read_csv(results / "metrics.csv", keep_default_na=False)
    assert sorted(set(val["round"])) == [1, 2]
    assert set(val["state"]) == set(test["state"]) - {"ALL"} | {"ALL"}
    counts = pd.read_csv(results / "val_counts.csv")
    assert (counts.groupby(["round", "state", "attribute"])["n"].sum() == 150).all()


def test_config_json_records_width_and_the_sizes_each_client_used(federation, tmp_path):
    results = federation({**SETTINGS, **PARTITION, "encoding": "paper", "clients-per-state": 2}, tmp_path / "r")
    data = json.loads((results / "config.json").read_text())["data"]
    assert (data["input_width"], data["hidden"]) == (54, 32)
    assert data["client_sizes"]["AL-0"] == {"train": 50, "test": 60, "val": 75}
    assert len(data["client_sizes"]) == 6


def test_without_a_validation_split_no_validation_files_are_written(federation, tmp_path):
    results = federation(SETTINGS, tmp_path / "r")
    assert not (results / "val_metrics.csv").exists() and (results / "metrics.csv").exists()
