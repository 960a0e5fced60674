"""The app copy `./run.sh run` hands to `flwr run` packages to the same FAB as the checkout."""

from __future__ import annotations

from pathlib import Path

from flwr.cli.build import build_fab_from_disk

from fl_app.app_copy import app_files, copy_app

REPO = Path(__file__).resolve().parent.parent


def test_the_copy_of_this_checkout_builds_the_same_fab_bytes(tmp_path):
    copy = copy_app(REPO, tmp_path / "app")
    assert build_fab_from_disk(copy) == build_fab_from_disk(REPO)


def write(root: Path, files: dict[str, str]) -> None:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_ignored_and_unpackaged_files_stay_out_and_the_fab_is_unchanged(tmp_path):
    root = tmp_path / "app"
    write(root, {
        "pyproject.toml": (REPO / "pyproject.toml").read_text(),
        ".gitignore": "__pycache__/\n.venv/\n/results/\n",
        "fl_app/server_app.py": "x = 1\n",
        "fl_app/__pycache__/server_app.cpython-311.pyc": "compiled",
        "docs/notes.md": "# notes\n",
        "data/table.parquet": "binary",
        "tests/test_one.py": "def test(): pass\n",
        "results/run/config.json": "{}",
        ".venv/lib/site.py": "y = 2\n",
        ".git/info.json": "{}",
    })
    assert sorted(app_files(root)) == [".git/info.json", ".gitignore", "docs/notes.md", "fl_app/server_app.py",
                                       "pyproject.toml", "tests/test_one.py"]
    assert build_fab_from_disk(copy_app(root, tmp_path / "copy")) == build_fab_from_disk(root)
