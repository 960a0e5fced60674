"""The folktables source reads a local folktables root offline, for both tasks, and the real
files give the published numbers: a synthetic root made here always runs; the real Wyoming PUMS
file and Massachusetts table of ../shared/data are checked when this machine has them."""

import json

import numpy as np
import pandas as pd
import pytest
from folktables import acs

from clients import download_acs, make_employment_sample, make_sample
from clients.sources import resolve_source, state_records
from clients.synthetic import synthetic_pums, write_folktables_fixture
from core.tasks import EMPLOYMENT, INCOME, PAPER_EMPLOYMENT, TASKS, OneHot, encode
from tests.conftest import run_in_process

PUMS_DIR = make_employment_sample.DEFAULT_PUMS_DIR
WY_FILE = PUMS_DIR / "2018" / "1-Year" / "psam_p56.csv"
MA_TABLE = make_employment_sample.DEFAULT_TABLE
INCOME_TABLE = make_sample.DEFAULT_SOURCE
needs_wy = pytest.mark.skipif(not WY_FILE.is_file(), reason=f"the real Wyoming PUMS file {WY_FILE} is not on this machine")
needs_ma = pytest.mark.skipif(not MA_TABLE.is_file(), reason=f"the real MA employment table {MA_TABLE} is not on this machine")
needs_income = pytest.mark.skipif(not INCOME_TABLE.is_file(),
                                  reason=f"the shared income table {INCOME_TABLE} is not on this machine")


def wyoming(task, root=PUMS_DIR) -> pd.DataFrame:
    """Wyoming's records through the project's folktables path, from the folktables root `root`."""
    source = resolve_source("folktables", "", str(root), ("WY",), task)
    return state_records(source, task, "WY", seed=0, synthetic_rows=0)


def one_code_per_feature(task, frame: pd.DataFrame) -> bool:
    """Every record's code of every one-hot feature is one of the listed codes (none falls outside)."""
    x, start = encode(task, frame), 0
    for feature in task.features:
        if isinstance(feature, OneHot) and not (x[:, start : start + feature.width].sum(axis=1) == 1).all():
            return False
        start += feature.width
    return True


@pytest.mark.parametrize("name", ["income", "employment"])
def test_a_local_root_is_read_offline_as_folktables_makes_the_task(tmp_path, network_attempts, name):
    write_folktables_fixture(tmp_path, ["WY"], seed=1, rows_per_state=300)
    task = TASKS[name]
    frame = wyoming(task, tmp_path)
    features, label, _ = getattr(acs, task.folktables_problem).df_to_pandas(synthetic_pums(["WY"], 1, 300))
    assert frame[task.columns].to_numpy().tolist() == features.astype(np.int64).to_numpy().tolist()
    assert frame["label"].tolist() == label.to_numpy().ravel().tolist()
    assert network_attempts == []


@pytest.mark.parametrize("name", ["income", "employment"])
def test_a_run_on_a_local_root_trains_every_state_offline(tmp_path, network_attempts, name):
    root = tmp_path / "pums"
    write_folktables_fixture(root, ["AL", "WY"], seed=1, rows_per_state=300)
    results = run_in_process({"task": name, "data-source": "folktables", "data-dir": str(root), "states": "AL,WY",
                              "num-server-rounds": 1, "local-epochs": 1}, tmp_path / "run")
    data = json.loads((results / "config.json").read_text())["data"]
    assert (data["source"], data["label"], data["states"]) == ("folktables", "real, 2 states", ["AL", "WY"])
    metrics = pd.read_csv(results / "metrics.csv", keep_default_na=False)
    assert metrics.query("state in ['AL', 'WY'] and metric == 'accuracy'")["round"].tolist() == [1, 1]
    assert network_attempts == []


def test_the_download_command_refuses_an_unknown_state(capsys, network_attempts):
    assert download_acs.main(["--states", "WY,XX"]) == 2
    assert "unknown state(s) XX; valid choices: AK, AL" in capsys.readouterr().err
    assert network_attempts == []


@needs_wy
@needs_income
def test_real_wyoming_income_equals_the_shared_tables_wyoming_rows(network_attempts):
    columns = ["STATE", *INCOME.columns, "label"]
    shared = pd.read_parquet(INCOME_TABLE, columns=columns).query("STATE == 'WY'")
    made = wyoming(INCOME)
    assert len(made) == 3064 and round(made["label"].mean(), 4) == 0.3577

    def rows(frame: pd.DataFrame) -> list[tuple]:
        return sorted(frame[columns].astype({c: np.int64 for c in INCOME.columns}).astype({"STATE": str})
                      .itertuples(index=False, name=None))

    assert rows(made) == rows(shared)
    assert network_attempts == []


@needs_wy
def test_real_wyoming_employment_has_5740_rows_and_positive_rate_0_4653(network_attempts):
    frame = wyoming(EMPLOYMENT)
    assert len(frame) == 5740 and round(frame["label"].mean(), 4) == 0.4653
    assert network_attempts == []


@needs_wy
def test_real_wyoming_employment_under_the_paper_encoding_is_109_wide_with_every_code_listed():
    frame = wyoming(PAPER_EMPLOYMENT)
    assert encode(PAPER_EMPLOYMENT, frame).shape == (5740, 109)
    assert one_code_per_feature(PAPER_EMPLOYMENT, frame)


@needs_wy
def test_a_real_run_on_the_wyoming_root_trains_offline(tmp_path, network_attempts):
    results = run_in_process({"task": "employment", "data-source": "folktables", "data-dir": str(PUMS_DIR),
                              "states": "WY", "encoding": "paper", "num-server-rounds": 1, "local-epochs": 1},
                             tmp_path / "run")
    data = json.loads((results / "config.json").read_text())["data"]
    assert (data["source"], data["label"], data["input_width"]) == ("folktables", "real, 1 state", 109)
    assert data["client_sizes"] == {"WY": {"train": 4592, "test": 1148, "val": 0}}
    assert network_attempts == []


@needs_ma
def test_the_real_ma_table_serves_the_employment_task_with_blanks_read_as_folktables_gives_them():
    source = resolve_source("table", str(MA_TABLE), "", (), EMPLOYMENT)
    frame = state_records(source, EMPLOYMENT, "MA", seed=0, synthetic_rows=0)
    assert source.states == ("MA",) and len(frame) == 70131 and round(frame["label"].mean(), 4) == 0.5051
    assert (frame[EMPLOYMENT.columns] >= 0).all().all()
    assert one_code_per_feature(PAPER_EMPLOYMENT, frame)


def test_the_bundled_employment_sample_fits_the_papers_fixed_109_columns():
    source = resolve_source("sample", "", "", (), PAPER_EMPLOYMENT)
    for state in source.states:
        frame = state_records(source, PAPER_EMPLOYMENT, state, seed=0, synthetic_rows=0)
        assert encode(PAPER_EMPLOYMENT, frame.head(1)).shape == (1, 109)
        assert one_code_per_feature(PAPER_EMPLOYMENT, frame)
