"""Empty the caches a run rebuilds by itself: `./run.sh clean-cache`.

Removes `codes/` (each state's encoded data, `clients/code_cache.py`) and `numba/` (compiled
kernels) from the user's cache (`core.cache_dir`) and says how much that freed. Downloaded Census
files (`folktables/`) are input data, not derived, and take minutes and a network to fetch again:
they are kept, and their size and path named so a user can delete them by hand.
A clean command rather than a size bound: entries only accumulate when a data file, an encoder
or a kernel changes, so a bound would rarely act, and evicting while Ray actors read the cache
would cost them a rebuild mid-run.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from core.cache_dir import cache_root

DERIVED = ("codes", "numba")
KEPT = "folktables"


def size_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6 if path.is_dir() else 0.0


def clean(root: Path) -> list[str]:
    """Remove the derived caches under `root`; one line per directory, removed or kept."""
    lines = []
    for name in DERIVED:
        path = root / name
        if path.is_dir():
            freed = size_mb(path)
            shutil.rmtree(path)
            lines.append(f"removed {path} ({freed:.1f} MB)")
    if (root / KEPT).is_dir():
        lines.append(f"kept {root / KEPT} ({size_mb(root / KEPT):.1f} MB of downloaded Census files; "
                     "delete it yourself to download them again)")
    return lines or [f"nothing to remove in {root}"]


def main() -> int:
    print("\n".join(clean(cache_root())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
