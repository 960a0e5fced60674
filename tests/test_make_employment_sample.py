"""The bundled employment sample: seeded per-state draws of the two real states, small, reproducible."""

import json

import pandas as pd
import pytest

from clients import make_employment_sample
from clients.make_employment_sample import main
from clients.sources import EMPLOYMENT_SAMPLE_PATH, Source, folktables_file, state_records
from clients.synthetic import write_folktables_fixture
from core.tasks import EMPLOYMENT, MISSING

BLANKABLE = ["SCHL", "ESP", "MIG", "MIL", "DREM"]  # ACSEmployment columns whose dictionary entry has a blank


@pytest.fixture
def sources(tmp_path):
    """A synthetic folktables root holding WY (30 people) and an MA table (40 rows) whose blanks are -1."""
    root = tmp_path / "pums"
    write_folktables_fixture(root, ["WY"], seed=1, rows_per_state=30)
    table = state_records(Source("synthetic", "", ("MA",)), EMPLOYMENT, "MA", 0, 40)
    table[BLANKABLE] = table[BLANKABLE].mask(table[BLANKABLE] == MISSING, -1)
    path = tmp_path / "ma.parquet"
    table.to_parquet(path)
    return root, path


def make(sources, out, *extra) -> int:
    root, table = sources
    return main(["--pums-dir", str(root), "--table", str(table), "--out", str(out), "--per-state", "25", *extra])


def test_the_script_samples_each_source_state_with_blanks_as_the_folktables_path_gives_them(sources, tmp_path, capsys):
    assert make(sources, tmp_path / "s.parquet") == 0
    sample = pd.read_parquet(tmp_path / "s.parquet")
    assert sample.groupby("STATE").size().to_dict() == {"MA": 25, "WY": 25}
    assert list(sample.columns) == ["STATE", *EMPLOYMENT.columns, "label"]
    assert (sample[EMPLOYMENT.columns] >= 0).all().all()
    assert "MA 25\nWY 25\n" in capsys.readouterr().out


def test_the_seed_decides_the_draw_and_the_same_seed_writes_the_same_bytes(sources, tmp_path):
    for name, seed in (("a", "0"), ("b", "0"), ("c", "1")):
        assert make(sources, tmp_path / f"{name}.parquet", "--seed", seed) == 0
    a, b, c = ((tmp_path / f"{n}.parquet").read_bytes() for n in "abc")
    assert a == b and a != c


def test_the_sidecar_records_both_sources_the_seed_and_the_counts(sources, tmp_path):
    assert make(sources, tmp_path / "s.parquet", "--seed", "3") == 0
    info = json.loads((tmp_path / "s.json").read_text())
    assert list(info["sources"]) == ["psam_p56.csv", "ma.parquet"]
    assert (info["seed"], info["per_state"], info["rows"], info["counts"]) == (3, 25, 50, {"MA": 25, "WY": 25})


def test_a_missing_pums_file_stops_the_script_with_one_message_and_writes_nothing(sources, tmp_path, capsys):
    _, table = sources
    out = tmp_path / "s.parquet"
    assert main(["--pums-dir", str(tmp_path / "none"), "--table", str(table), "--out", str(out)]) == 2
    assert "psam_p56.csv' (data-dir" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "none").exists()


def test_the_bundled_sample_is_small_real_two_states_and_its_sidecar_matches_it():
    assert EMPLOYMENT_SAMPLE_PATH.stat().st_size < 200_000
    info = json.loads(EMPLOYMENT_SAMPLE_PATH.with_suffix(".json").read_text())
    sample = pd.read_parquet(EMPLOYMENT_SAMPLE_PATH)
    assert info["counts"] == sample["STATE"].value_counts().sort_index().to_dict() == {"MA": 5000, "WY": 5000}
    assert info["positives"] == sample.groupby("STATE")["label"].sum().to_dict() == {"MA": 2523, "WY": 2331}


SHARED_FILES = (folktables_file(make_employment_sample.DEFAULT_PUMS_DIR, "WY"), make_employment_sample.DEFAULT_TABLE)


@pytest.mark.skipif(not all(f.is_file() for f in SHARED_FILES),
                    reason="the shared WY PUMS file and MA employment table are not on this machine")
def test_the_bundled_sample_is_what_the_script_makes_from_the_shared_files(tmp_path):
    assert main(["--out", str(tmp_path / "s.parquet")]) == 0
    assert (tmp_path / "s.parquet").read_bytes() == EMPLOYMENT_SAMPLE_PATH.read_bytes()
    assert (tmp_path / "s.json").read_text() == EMPLOYMENT_SAMPLE_PATH.with_suffix(".json").read_text()
