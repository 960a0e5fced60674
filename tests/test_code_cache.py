"""The on-disk cache of each state's compact codes: what a fresh process loads instead of
reading and encoding its state again, never a stale entry, never a half-written one."""

import shutil
import stat

import numpy as np
import pytest

from clients import data, sources
from clients.data import codes_from_arrays, codes_to_arrays, state_codes
from clients.sources import Source, state_records
from core.tasks import task_for
from tests.conftest import REPO

SYNTHETIC = Source("synthetic", "", ("AL", "WY"))


@pytest.fixture(autouse=True)
def fresh_process(tmp_path, monkeypatch):
    """A user cache of the test's own, and no codes in memory (as in a new process)."""
    monkeypatch.setenv("FAIRFL_CACHE_DIR", str(tmp_path / "user-cache"))
    state_codes.cache_clear()
    sources._table_frame.cache_clear()
    yield
    state_codes.cache_clear()
    sources._table_frame.cache_clear()


def new_process() -> None:
    state_codes.cache_clear()
    sources._table_frame.cache_clear()


def assert_same_codes(a, b) -> None:
    assert (a.state, a.seed, a.standardize) == (b.state, b.seed, b.standardize)
    for x, y in zip(codes_to_arrays(a).items(), codes_to_arrays(b).items(), strict=True):
        assert x[0] == y[0] and x[1].dtype == y[1].dtype and np.array_equal(x[1], y[1]), x[0]


def records(rows: int) -> int:
    return len(state_records(SYNTHETIC, task_for("income"), "AL", 0, rows))


def table_of(tmp_path, rows: int) -> Source:
    path = tmp_path / "data" / "table.parquet"
    path.parent.mkdir(exist_ok=True)
    state_records(SYNTHETIC, task_for("income"), "AL", 0, rows).to_parquet(path)
    return Source("table", str(path), ("AL",))


def size(codes) -> int:
    return len(codes.train.y) + len(codes.test.y) + len(codes.val.y)


def forbid_reading(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("the source was read although the cache holds the codes")

    monkeypatch.setattr(data, "state_records", refuse)


@pytest.mark.parametrize("encoding", ["grouped", "paper"])
def test_arrays_give_back_the_same_codes(encoding):
    codes = state_codes(SYNTHETIC, "income", "AL", 3, 400, encoding=encoding, train_rows=100, test_rows=50, val_rows=50)
    assert_same_codes(codes_from_arrays(codes_to_arrays(codes)), codes)


def test_a_fresh_process_loads_the_codes_without_reading_the_source(monkeypatch):
    built = state_codes(SYNTHETIC, "income", "WY", 0, 300)
    new_process()
    forbid_reading(monkeypatch)
    assert_same_codes(state_codes(SYNTHETIC, "income", "WY", 0, 300), built)


def test_another_seed_is_another_entry(monkeypatch):
    state_codes(SYNTHETIC, "income", "WY", 0, 300)
    new_process()
    forbid_reading(monkeypatch)
    with pytest.raises(AssertionError, match="the source was read"):
        state_codes(SYNTHETIC, "income", "WY", 1, 300)


def test_a_table_s_entry_lives_in_the_user_cache_and_a_changed_file_is_read_again(tmp_path):
    source = table_of(tmp_path, 300)
    first = state_codes(source, "income", "AL", 0, 0)
    assert [p.parent for p in tmp_path.rglob("*.npz")] == [tmp_path / "user-cache" / "codes"]
    table_of(tmp_path, 500)  # same path, new content
    new_process()
    again = state_codes(source, "income", "AL", 0, 0)
    assert (size(first), size(again)) == (records(300), records(500)) and records(300) != records(500)


def snapshot(folder) -> dict:
    """Every path under `folder` with its size, mode and modification time."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mode, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))} | {".": (folder.stat().st_mode, folder.stat().st_mtime_ns)}


@pytest.mark.parametrize("writable", [False, True], ids=["read-only", "writable"])
def test_a_run_leaves_a_copy_of_a_data_folder_unchanged(tmp_path, federation, writable):
    folder = tmp_path / "data"
    shutil.copytree(REPO / "data", folder)
    if not writable:
        for path in [*folder.iterdir(), folder]:
            path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    before = snapshot(folder)
    try:
        federation({"data-source": "table", "data-path": str(folder / "acs_income_2018_sample.parquet"),
                    "states": "AK,DE", "num-server-rounds": 1, "local-epochs": 1}, tmp_path / "results")
        assert snapshot(folder) == before
        assert len(list((tmp_path / "user-cache" / "codes").glob("*.npz"))) == 2
    finally:
        for path in [folder, *folder.iterdir()]:
            path.chmod(path.stat().st_mode | stat.S_IWUSR)


def test_a_cache_that_cannot_be_written_is_skipped(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    monkeypatch.setenv("FAIRFL_CACHE_DIR", str(blocker))
    codes = state_codes(SYNTHETIC, "income", "AL", 0, 300)
    assert size(codes) == records(300) and blocker.read_text() == ""
