"""One cache root for everything a run caches: FAIRFL_CACHE_DIR, else XDG_CACHE_HOME, else ~/.cache."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from clients.sources import default_data_dir
from core.cache_dir import cache_root
from fl_app.clean_cache import clean
from tests.conftest import REPO


@pytest.fixture
def no_overrides(monkeypatch):
    monkeypatch.delenv("FAIRFL_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    return monkeypatch


def test_the_default_root_is_fairfl_in_the_home_cache(no_overrides):
    assert cache_root() == Path.home() / ".cache" / "fairfl"


def test_xdg_cache_home_moves_the_root(no_overrides, tmp_path):
    no_overrides.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_root() == tmp_path / "fairfl"


def test_a_relative_xdg_cache_home_is_ignored(no_overrides):
    no_overrides.setenv("XDG_CACHE_HOME", "relative/cache")
    assert cache_root() == Path.home() / ".cache" / "fairfl"


def test_fairfl_cache_dir_wins_over_xdg(no_overrides, tmp_path):
    no_overrides.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    no_overrides.setenv("FAIRFL_CACHE_DIR", str(tmp_path / "mine"))
    assert cache_root() == tmp_path / "mine"


def test_the_folktables_default_lives_under_the_root(tmp_path, monkeypatch):
    monkeypatch.setenv("FAIRFL_CACHE_DIR", str(tmp_path))
    assert default_data_dir() == tmp_path / "folktables"


def test_compiled_kernels_are_cached_under_the_root(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"} | {"FAIRFL_CACHE_DIR": str(tmp_path)}
    code = "import clients.compiled, numba; print(numba.config.CACHE_DIR)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                         check=True, timeout=120).stdout
    assert out.strip() == str(tmp_path / "numba")


def test_clean_cache_removes_what_runs_rebuild_and_keeps_the_downloads(tmp_path):
    for name in ("codes", "numba", "folktables"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "entry").write_bytes(b"x" * 2_000_000)
    lines = clean(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folktables"]
    assert lines == [f"removed {tmp_path / 'codes'} (2.0 MB)", f"removed {tmp_path / 'numba'} (2.0 MB)",
                     f"kept {tmp_path / 'folktables'} (2.0 MB of downloaded Census files; "
                     "delete it yourself to download them again)"]
