"""The directory `flwr run` packages: a copy of the checkout's app files, without its virtualenv.

`flwr run DIR` lists every file under DIR and resolves each path before it filters them (flwr
1.42, `cli/utils.collect_files`). A checkout holds its `.venv`, about 48,000 files, so that
walk alone took about 7 s of every run's start-up. This copy walks the checkout without the
directories Flower never packages (`.venv` and `.flwr`, and whatever `.gitignore` ignores) and
keeps the files Flower's own filter keeps, so the FAB built from it is the same bytes as
the one built from the checkout (tests/test_app_copy.py).

`python -m fl_app.app_copy DEST` makes the copy in DEST (which must not exist) and prints it.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

from flwr.cli.utils import build_pathspec, filter_paths_for_publish, load_gitignore_patterns

REPO = Path(__file__).resolve().parent.parent
NEVER_PACKAGED = (".venv", ".flwr")  # Flower's publish exclude patterns, whatever .gitignore says


def app_files(root: Path) -> dict[str, Path]:
    """The files under `root` that Flower packages, by relative POSIX path."""
    ignored = build_pathspec(load_gitignore_patterns(root / ".gitignore"))
    files: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        relative = here.relative_to(root)
        dirnames[:] = [d for d in dirnames if d not in NEVER_PACKAGED
                       and not ignored.match_file(f"{(relative / d).as_posix()}/")]
        for name in filenames:
            path = here / name
            if not path.is_symlink():
                files[(relative / name).as_posix()] = path
    return dict(filter_paths_for_publish(files))


def copy_app(root: Path, dest: Path) -> Path:
    """Copy `root`'s packaged files into the new directory `dest`."""
    dest.mkdir(parents=True)
    for relative, path in app_files(root).items():
        target = dest / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    return dest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", type=Path, help="a directory that does not exist yet")
    parser.add_argument("--root", type=Path, default=REPO, help="the app's checkout (default: this one)")
    args = parser.parse_args()
    print(copy_app(args.root, args.dest))


if __name__ == "__main__":
    main()
