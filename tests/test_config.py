"""The run config: defaults from pyproject, typed parsing and one clear message per bad value."""

import re
import tomllib
from pathlib import Path

import pytest

from fl_app.config import ConfigError, RunConfig, absolute_results_dir, config_keys, parse_config, resume_conflicts
from strategies.registry import strategy_keys

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def pyproject_defaults() -> dict:
    return tomllib.loads(PYPROJECT.read_text())["tool"]["flwr"]["app"]["config"]


def test_pyproject_defaults_are_the_study_settings():
    config = parse_config(pyproject_defaults())
    assert (config.task, config.strategy, config.lr, config.local_epochs, config.batch_size) == (
        "income", "fedavg", 0.001, 10, 32,
    )


def test_every_pyproject_key_is_a_config_key_and_back():
    assert sorted(pyproject_defaults()) == sorted(config_keys())


def test_pyproject_defaults_equal_the_declared_ones():
    declared = {**RunConfig().to_dict(), **{k: default for k, (default, _, _) in strategy_keys().items()}}
    assert pyproject_defaults() == declared == config_keys()


def test_a_key_of_another_strategy_is_refused_naming_its_owners():
    with pytest.raises(ConfigError, match="config key 'k' belongs to strategy ifca, fair-ifca, flhc, fair-flhc, not 'fedavg'"):
        parse_config({"strategy": "fedavg", "k": 3})


def test_a_key_of_another_strategy_at_its_default_is_accepted():
    assert parse_config({"strategy": "fedavg", "k": 2}).params is None


def test_states_are_parsed_into_upper_case_codes():
    assert parse_config({"states": "ca, ny,TX"}).states == ("CA", "NY", "TX")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"task": "health"}, "unknown task 'health'; valid choices: income, employment"),
        ({"strategy": "fedprox"}, "unknown strategy 'fedprox'; valid choices: fedavg, perfedavg, ifca, fair-ifca"),
        ({"data-source": "s3"}, "unknown data-source 's3'; valid choices: auto, table, sample, folktables, synthetic"),
        ({"strategy": "fair-ifca", "fair-attribute": "age"}, "unknown fair-attribute 'age'; valid choices: sex, race"),
        ({"strategy": "flwr:FedNova"}, "unknown strategy 'flwr:FedNova'; valid Flower strategies: flwr:FedAvg, flwr:FedProx"),
        ({"strategy": "flwr:FedProx", "server-lr": 0.5}, "config key 'server-lr' is not read by strategy 'flwr:FedProx'"),
        ({"lr": -0.1}, "config key 'lr' must be > 0, got -0.1"),
        ({"num-server-rounds": 0}, "config key 'num-server-rounds' must be >= 1, got 0"),
        ({"clients-per-state": 0}, "config key 'clients-per-state' must be >= 1, got 0"),
        ({"batch-size": "32"}, "config key 'batch-size' must be an integer, got '32'"),
        ({"data-source": "table"}, "data-source 'table' needs config key 'data-path'"),
        ({"states": "CA,CA"}, "config key 'states' lists a state twice: CA,CA"),
    ],
)
def test_bad_values_are_named_with_valid_choices(raw, expected):
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    assert expected in str(err.value)


def test_unknown_keys_are_listed_with_the_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) epochs; valid keys: task, strategy"):
        parse_config({"epochs": 3})


def test_default_results_dir_names_time_strategy_and_task(tmp_path):
    path = absolute_results_dir(parse_config({"strategy": "fedavg"}), "20261126-080000", tmp_path, "sample")
    assert path == tmp_path / "results" / "20261126-080000-fedavg-income"


def test_a_synthetic_runs_default_results_dir_says_synthetic(tmp_path):
    path = absolute_results_dir(parse_config({"strategy": "fedavg"}), "20261126-080000", tmp_path, "synthetic")
    assert path == tmp_path / "results" / "20261126-080000-fedavg-income-synthetic"


def test_a_run_from_before_a_key_existed_resumes_with_its_default():
    before = {k: v for k, v in RunConfig().to_dict().items() if k != "clients-per-state"}
    assert resume_conflicts(before, RunConfig().to_dict()) == []


def test_every_config_key_is_documented_in_the_configuration_table():
    page = (PYPROJECT.parent / "docs" / "configuration.md").read_text()
    section = page[page.index("## Config keys"):page.index("## Presets")]
    documented = {key for cell in re.findall(r"^\| ((?:`[a-z0-9-]+`(?:, )?)+) \|", section, re.M)
                  for key in re.findall(r"`([a-z0-9-]+)`", cell)}
    assert documented == set(config_keys())


@pytest.mark.parametrize(("raw", "expected"), [
    ({"min-clients": 0}, "config key 'min-clients' must be a whole number of clients >= 1 or a fraction in (0, 1), got 0"),
    ({"min-clients": 2.5}, "config key 'min-clients' must be a whole number of clients >= 1 or a fraction in (0, 1), got 2.5"),
    ({"max-failed-rounds": 0}, "config key 'max-failed-rounds' must be >= 1, got 0"),
    ({"round-timeout": 0}, "config key 'round-timeout' must be > 0, got 0"),
    ({"node-states": "12=XX"}, "config key 'node-states' binds nodes to unknown state code(s) XX; valid: AK, AL"),
    ({"node-states": "12:CA"}, "config key 'node-states' must list NODE_ID=STATE pairs separated by commas"),
    ({"node-states": "12=CA,12=WY"}, "config key 'node-states' binds node 12 twice"),
])
def test_participation_keys_are_validated_before_training(raw, expected):
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    assert expected in str(err.value)


def test_the_operational_keys_may_change_on_resume():
    before = RunConfig().to_dict()
    after = {**before, "round-timeout": 30.0, "max-failed-rounds": 9, "node-states": "1=CA", "num-server-rounds": 40}
    assert resume_conflicts(before, after) == []
    assert resume_conflicts(before, {**before, "min-clients": 2.0}) == ["min-clients"]


@pytest.mark.parametrize("strategy", ["fair-ifca", "fair-flhc"])
@pytest.mark.parametrize("weight", [0.0, 0.5])
def test_the_paper_preset_keeps_the_fairness_weight_given(strategy, weight):
    raw = {**pyproject_defaults(), "strategy": strategy, "preset": "paper", "lambda": weight}
    assert parse_config(raw).params.fair_lambda == weight
