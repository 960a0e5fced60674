"""Data sources: a prepared table and the bundled sample are checked before training; `auto`
resolves as documented from local files alone, never touching the network."""

import re
import shutil
import socket
import urllib.request

import pandas as pd
import pytest

from clients.sources import SAMPLE_PATH, DataError, check_table, resolve_source, state_records
from core.tasks import EMPLOYMENT, INCOME


@pytest.fixture
def table(tmp_path, make_income_frame):
    path = tmp_path / "acs.parquet"
    pd.concat([make_income_frame("CA", 30), make_income_frame("AL", 20, seed=1)]).to_parquet(path)
    return path


def test_table_states_are_sorted_codes(table):
    assert check_table(table, INCOME) == ("AL", "CA")


def test_table_records_of_one_state_keep_raw_codes(table, make_income_frame):
    source = resolve_source("table", str(table), "", (), INCOME)
    frame = state_records(source, INCOME, "CA", seed=0, synthetic_rows=0)
    assert len(frame) == 30 and frame["label"].dtype == bool
    assert frame["AGEP"].tolist() == make_income_frame("CA", 30)["AGEP"].tolist()


def test_missing_table_is_named(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        check_table(tmp_path / "none.parquet", INCOME)


def test_table_missing_a_column_names_it_and_the_needed_ones(tmp_path, make_income_frame):
    path = tmp_path / "short.csv"
    make_income_frame("CA", 5).drop(columns=["WKHP"]).to_csv(path, index=False)
    with pytest.raises(DataError, match=r"lacks column\(s\) WKHP needed for task 'income'; it needs STATE, AGEP"):
        check_table(path, INCOME)


def test_corrupt_table_is_reported_as_unreadable(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"not a parquet file")
    with pytest.raises(DataError, match="cannot be read as parquet"):
        check_table(path, INCOME)


def test_unknown_state_lists_the_valid_ones(table):
    with pytest.raises(DataError, match="unknown state.*TX.*valid choices: AL, CA"):
        resolve_source("table", str(table), "", ("TX",), INCOME)


@pytest.fixture
def network_attempts(monkeypatch):
    """Every attempt to open a connection or a URL, each refused; a test asserts there were none."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access attempted in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    return attempts


@pytest.fixture
def sample_copy(tmp_path):
    path = tmp_path / "sample.parquet"
    shutil.copyfile(SAMPLE_PATH, path)
    return path


def test_sample_serves_its_real_records_by_absolute_path():
    source = resolve_source("sample", "", "", ("WY", "AL"), INCOME)
    assert (source.kind, source.path, source.states) == ("sample", str(SAMPLE_PATH), ("AL", "WY"))
    frame = state_records(source, INCOME, "WY", seed=0, synthetic_rows=0)
    assert len(frame) == 3064 and frame["label"].dtype == bool
    assert list(frame.columns) == ["STATE", *INCOME.columns, "label"]


def test_sample_holds_the_46_states_of_the_shared_table():
    states = resolve_source("sample", "", "", (), INCOME).states
    assert len(states) == 46 and not {"CA", "FL", "NY", "TX", "PR"} & set(states)


def test_sample_data_path_names_the_sample_file(sample_copy):
    assert resolve_source("sample", str(sample_copy), "", (), INCOME).path == str(sample_copy)


def test_missing_sample_names_the_file_and_how_to_rebuild_it(tmp_path):
    missing = tmp_path / "gone.parquet"
    with pytest.raises(DataError, match=rf"sample file '{missing}' does not exist.*python -m clients.make_sample"):
        resolve_source("sample", "", "", (), INCOME, sample=missing)


def test_corrupt_sample_names_the_file_and_how_to_rebuild_it(sample_copy):
    sample_copy.write_bytes(sample_copy.read_bytes()[:5000])
    with pytest.raises(DataError, match=rf"sample file '{sample_copy}' cannot be read as parquet.*clients.make_sample"):
        resolve_source("sample", "", "", (), INCOME, sample=sample_copy)


def test_sample_lacking_a_state_lists_the_ones_it_has():
    with pytest.raises(DataError, match="unknown state.*CA for the sample .*valid choices: AK, AL"):
        resolve_source("sample", "", "", ("CA",), INCOME)


def test_there_is_no_employment_sample():
    with pytest.raises(DataError, match="no employment sample.*valid choices for task 'employment': auto, table, folktables, synthetic"):
        resolve_source("sample", "", "", (), EMPLOYMENT)


def test_auto_prefers_an_existing_table(table, network_attempts):
    assert resolve_source("auto", str(table), "", (), INCOME).kind == "table"
    assert network_attempts == []


def test_auto_with_a_data_path_that_does_not_exist_names_it(tmp_path, network_attempts):
    with pytest.raises(DataError, match="none.parquet' does not exist"):
        resolve_source("auto", str(tmp_path / "none.parquet"), str(tmp_path), (), INCOME)
    assert network_attempts == []


def test_auto_uses_folktables_when_its_cache_is_complete(tmp_path, network_attempts):
    year_dir = tmp_path / "2018" / "1-Year"
    year_dir.mkdir(parents=True)
    (year_dir / "psam_p06.csv").write_text("x\n")
    source = resolve_source("auto", "", str(tmp_path), ("CA",), INCOME)
    assert (source.kind, source.states) == ("folktables", ("CA",))
    assert network_attempts == []


def test_auto_uses_the_sample_for_income_without_table_or_cache(tmp_path, network_attempts, capsys):
    source = resolve_source("auto", "", str(tmp_path), (), INCOME)
    assert (source.kind, source.path, len(source.states)) == ("sample", str(SAMPLE_PATH), 46)
    assert "SYNTHETIC" not in capsys.readouterr().err
    assert network_attempts == []


@pytest.mark.parametrize(
    ("task", "states", "why"),
    [(EMPLOYMENT, ("AL",), "no employment sample"), (INCOME, ("AL", "CA"), "the sample lacks state.s. CA")],
    ids=["employment", "state-outside-the-sample"],
)
def test_auto_falls_back_to_synthetic_loudly_saying_why(tmp_path, network_attempts, capsys, task, states, why):
    source = resolve_source("auto", "", str(tmp_path), states, task)
    assert (source.kind, source.states) == ("synthetic", tuple(sorted(states)))
    banner = capsys.readouterr().err
    assert "SYNTHETIC" in banner and re.search(why, banner) and re.search(why, source.note)
    assert network_attempts == []


def test_auto_without_the_sample_file_falls_back_to_synthetic_naming_it(tmp_path, network_attempts, capsys):
    missing = tmp_path / "gone.parquet"
    source = resolve_source("auto", "", str(tmp_path), (), INCOME, sample=missing)
    assert source.kind == "synthetic"
    assert f"no sample file {missing}" in capsys.readouterr().err
    assert network_attempts == []


def test_auto_refuses_a_corrupt_sample_before_training(tmp_path, sample_copy, network_attempts):
    sample_copy.write_bytes(b"not a parquet file")
    with pytest.raises(DataError, match="cannot be read as parquet.*clients.make_sample"):
        resolve_source("auto", "", str(tmp_path), (), INCOME, sample=sample_copy)
    assert network_attempts == []
