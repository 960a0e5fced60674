"""The one directory every cache of the project lives in, so nothing is ever written beside
the input data or inside the repository.

`FAIRFL_CACHE_DIR` if set, else `$XDG_CACHE_HOME/fairfl`, else `~/.cache/fairfl`. Imports only
the standard library: `clients.compiled` reads it before numba is imported.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV = "FAIRFL_CACHE_DIR"


def cache_root() -> Path:
    """The user's fairfl cache directory (not created here). A relative XDG_CACHE_HOME is
    ignored, as the XDG base directory specification asks."""
    if os.environ.get(ENV):
        return Path(os.environ[ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "fairfl"
