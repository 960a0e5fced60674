"""The bundled sample: seeded per-state draws of the real table, compact, byte-for-byte reproducible."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from clients import make_sample
from clients.make_sample import sample_records, write_sample
from clients.sources import SAMPLE_PATH
from core.tasks import INCOME


@pytest.fixture
def table(make_income_frame) -> pd.DataFrame:
    frames = [make_income_frame("WY", 12, seed=1), make_income_frame("AL", 30), make_income_frame("VT", 25, seed=2)]
    frame = pd.concat(frames, ignore_index=True)
    return frame.astype({c: np.int32 for c in INCOME.columns})


def test_each_state_keeps_at_most_per_state_records_drawn_from_its_own(table):
    sample = sample_records(table, per_state=20, seed=0)
    assert sample.groupby("STATE").size().to_dict() == {"AL": 20, "VT": 20, "WY": 12}
    for state, rows in sample.groupby("STATE"):
        whole = table[table["STATE"] == state]
        assert len(rows.merge(whole, how="inner")) == len(rows)


def test_a_smaller_state_is_kept_whole_in_the_tables_order(table):
    wyoming = sample_records(table, per_state=20, seed=0).query("STATE == 'WY'").reset_index(drop=True)
    expected = table[table["STATE"] == "WY"].reset_index(drop=True)
    pd.testing.assert_frame_equal(wyoming, expected, check_dtype=False)


def test_the_seed_decides_the_draw(table):
    first, again = sample_records(table, 20, seed=0), sample_records(table, 20, seed=0)
    other = sample_records(table, 20, seed=1)
    pd.testing.assert_frame_equal(first, again)
    assert not first.equals(other)


def test_codes_take_the_smallest_integer_types_and_the_label_is_bool(table):
    dtypes = sample_records(table, 20, seed=0).dtypes.astype(str).to_dict()
    assert dtypes == {"STATE": "str", "AGEP": "int8", "COW": "int8", "SCHL": "int8", "MAR": "int8", "OCCP": "int16",
                      "POBP": "int16", "RELP": "int8", "WKHP": "int8", "SEX": "int8", "RAC1P": "int8", "label": "bool"}


def test_the_same_table_writes_the_same_bytes(table, tmp_path):
    sample = sample_records(table, 20, seed=0)
    write_sample(sample, tmp_path / "a.parquet")
    write_sample(sample_records(table, 20, seed=0), tmp_path / "b.parquet")
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()
    assert pq.read_metadata(tmp_path / "a.parquet").row_group(0).column(1).compression == "ZSTD"
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "a.parquet"), sample)


def test_the_script_prints_and_records_source_seed_and_counts(table, tmp_path, capsys):
    source = tmp_path / "real.parquet"
    table.to_parquet(source)
    out = tmp_path / "data" / "s.parquet"
    assert make_sample.main(["--source", str(source), "--out", str(out), "--seed", "3", "--per-state", "20"]) == 0
    printed = capsys.readouterr().out
    assert f"source: {source}" in printed and "AL 20\nVT 20\nWY 12\n" in printed
    info = json.loads(out.with_suffix(".json").read_text())
    assert (info["source"], info["seed"], info["per_state"], info["rows"]) == ("real.parquet", 3, 20, 52)
    assert info["counts"] == {"AL": 20, "VT": 20, "WY": 12}
    assert "public-domain" in info["license"]


def test_the_script_refuses_a_bad_source_with_one_message(tmp_path, capsys):
    assert make_sample.main(["--source", str(tmp_path / "none.parquet"), "--out", str(tmp_path / "s.parquet")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "s.parquet").exists()


def test_the_bundled_sample_is_small_and_its_sidecar_matches_it():
    assert SAMPLE_PATH.stat().st_size < 2_000_000
    info = json.loads(SAMPLE_PATH.with_suffix(".json").read_text())
    counts = pd.read_parquet(SAMPLE_PATH, columns=["STATE"])["STATE"].value_counts().sort_index()
    assert info["counts"] == counts.to_dict() and info["rows"] == counts.sum()
    assert max(info["counts"].values()) == 5000 and info["counts"]["WY"] == 3064


@pytest.mark.skipif(not make_sample.DEFAULT_SOURCE.is_file(), reason="the shared 46-state table is not on this machine")
def test_the_bundled_sample_is_what_the_script_makes_from_the_shared_table(tmp_path):
    assert make_sample.main(["--out", str(tmp_path / "s.parquet")]) == 0
    assert (tmp_path / "s.parquet").read_bytes() == Path(SAMPLE_PATH).read_bytes()
    assert (tmp_path / "s.json").read_text() == SAMPLE_PATH.with_suffix(".json").read_text()
