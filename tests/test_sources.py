"""Data sources: a prepared table is checked before training; `auto` resolves as documented."""

import pandas as pd
import pytest

from clients.sources import DataError, check_table, resolve_source, state_records
from core.tasks import INCOME


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


def test_auto_prefers_an_existing_table(table):
    assert resolve_source("auto", str(table), "", (), INCOME).kind == "table"


def test_auto_uses_folktables_when_its_cache_is_complete(tmp_path):
    year_dir = tmp_path / "2018" / "1-Year"
    year_dir.mkdir(parents=True)
    (year_dir / "psam_p06.csv").write_text("x\n")
    source = resolve_source("auto", "", str(tmp_path), ("CA",), INCOME)
    assert (source.kind, source.states) == ("folktables", ("CA",))


def test_auto_falls_back_to_synthetic_loudly(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("clients.sources._census_reachable", lambda: False)
    source = resolve_source("auto", "", str(tmp_path), ("CA", "AL"), INCOME)
    assert (source.kind, source.states) == ("synthetic", ("AL", "CA"))
    assert "SYNTHETIC" in capsys.readouterr().err
