"""Data sources: a prepared table and the bundled sample are checked before training; `auto`
resolves as documented from local files alone, never touching the network."""

import re
import shutil

import pandas as pd
import pytest

from clients.sources import EMPLOYMENT_SAMPLE_PATH, SAMPLE_PATH, DataError, check_table, resolve_source, state_records
from clients.synthetic import write_folktables_fixture
from core.tasks import EMPLOYMENT, INCOME, MISSING


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


def test_the_employment_sample_serves_the_two_real_states_by_absolute_path():
    source = resolve_source("sample", "", "", (), EMPLOYMENT)
    assert (source.kind, source.path, source.states, source.label) == (
        "sample", str(EMPLOYMENT_SAMPLE_PATH), ("MA", "WY"), "real, 2 states")
    frame = state_records(source, EMPLOYMENT, "WY", seed=0, synthetic_rows=0)
    assert len(frame) == 5000 and list(frame.columns) == ["STATE", *EMPLOYMENT.columns, "label"]


def test_a_missing_employment_sample_names_its_own_rebuild_script(tmp_path):
    with pytest.raises(DataError, match=r"sample file .*gone.parquet' does not exist.*clients.make_employment_sample"):
        resolve_source("sample", "", "", (), EMPLOYMENT, sample=tmp_path / "gone.parquet")


def test_synthetic_data_is_labelled_synthetic():
    assert resolve_source("synthetic", "", "", ("AL", "CA", "WY"), EMPLOYMENT).label == "synthetic, 3 states"


@pytest.fixture
def employment_table(tmp_path):
    """Two MA records: the first blank in every blank-capable column, written -1 as the shared MA table
    writes blanks; the second with codes."""
    frame = pd.DataFrame({column: [1, 2] for column in EMPLOYMENT.columns})
    frame[["SCHL", "ESP", "MIG", "MIL", "DREM"]] = [[-1, -1, -1, -1, -1], [21, 3, 1, 2, 2]]
    frame.insert(0, "STATE", "MA")
    frame["label"] = [False, True]
    path = tmp_path / "employment.parquet"
    frame.to_parquet(path)
    return path


def test_an_employment_table_is_accepted_for_the_employment_task(employment_table):
    assert check_table(employment_table, EMPLOYMENT) == ("MA",)


def test_negative_blank_codes_in_a_table_read_as_the_folktables_blank(employment_table):
    source = resolve_source("table", str(employment_table), "", (), EMPLOYMENT)
    frame = state_records(source, EMPLOYMENT, "MA", seed=0, synthetic_rows=0)
    assert frame.loc[0, ["SCHL", "ESP", "MIG", "MIL", "DREM"]].tolist() == [MISSING] * 5
    assert frame.loc[1, ["SCHL", "ESP", "MIG", "MIL", "DREM"]].tolist() == [21, 3, 1, 2, 2]


def test_an_income_table_for_the_employment_task_names_the_missing_columns_and_the_task(table):
    with pytest.raises(DataError, match=r"lacks column\(s\) DIS, ESP, CIT, MIG, MIL, ANC, NATIVITY, DEAR, DEYE, DREM "
                                        r"needed for task 'employment'; it needs STATE, AGEP, SCHL"):
        resolve_source("table", str(table), "", (), EMPLOYMENT)


def test_a_missing_folktables_file_names_it_the_download_command_and_the_other_sources(tmp_path, network_attempts):
    expected = tmp_path / "2018" / "1-Year" / "psam_p56.csv"
    with pytest.raises(DataError) as err:
        resolve_source("folktables", "", str(tmp_path), ("WY",), EMPLOYMENT)
    assert f"expected at '{expected}'" in str(err.value)
    assert f"python -m clients.download_acs --data-dir {tmp_path} --states WY" in str(err.value)
    assert "pick another data-source: table, sample, synthetic" in str(err.value)
    assert list(tmp_path.iterdir()) == [] and network_attempts == []


def test_every_missing_folktables_state_is_in_the_download_command(tmp_path):
    write_folktables_fixture(tmp_path, ["WY"], seed=0, rows_per_state=10)
    with pytest.raises(DataError, match=r"file of AL, expected at .*psam_p01.csv' .*which does not exist \(and the files "
                                        r"of 1 more state\(s\)\); download it with .* --states AL,CA`"):
        resolve_source("folktables", "", str(tmp_path), ("WY", "CA", "AL"), INCOME)


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
    [(EMPLOYMENT, ("AL",), "the sample lacks state.s. AL"), (INCOME, ("AL", "CA"), "the sample lacks state.s. CA")],
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
