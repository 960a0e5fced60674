"""How every compiled (numba) function of the project is built: cached on disk by source
content, and with IEEE arithmetic exactly as written.

No fast-math flags, ever. `reassoc` let LLVM reorder sums to fit the host's vector width and
`contract` fused multiply-adds where the CPU has FMA, so the same seed gave other bytes on
other CPUs. Without them each operation is one correctly rounded IEEE operation in source
order, which every x86-64 target computes alike; loops over independent elements still
vectorize (a lane's result does not depend on the width), and reductions keep a fixed number of
explicit partial sums (see `clients.kernels`).
"""

from __future__ import annotations

import hashlib
import os
import sys

from core.cache_dir import cache_root

# numba caches compiled kernels next to their source by default; the Flower app runs from a
# packaged copy and site-packages may be read-only, so the cache goes to one writable per-user
# directory instead (set before numba is imported, which reads it then).
os.environ.setdefault("NUMBA_CACHE_DIR", str(cache_root() / "numba"))

from numba import config as numba_config
from numba import njit
from numba.core.caching import UserProvidedCacheLocator

if not numba_config.CACHE_DIR:  # numba was imported before this module set the variable
    numba_config.CACHE_DIR = os.environ["NUMBA_CACHE_DIR"]


def _load_numba_numpy_support_without_scipy() -> None:
    """Import numba's numpy implementations with `scipy.linalg` hidden.

    Loading the first kernel, even from the cache, imports them, and they probe for BLAS by importing
    `scipy.linalg`: 0.3 CPU s, a sixth of what a deployment-engine ClientApp process (one per message)
    spends. The probe only picks BLAS for `np.correlate`/`np.convolve`, and no kernel uses BLAS (the
    same seed must give the same bytes on every CPU), so the kernels are the same code either way.
    `sys.modules[name] = None` is the import system's documented way to make an import fail; it is
    undone at once, so scipy stays importable for everything else in the process."""
    if "scipy.linalg" in sys.modules or "numba.np.arraymath" in sys.modules:
        return
    sys.modules["scipy.linalg"] = None
    try:
        import numba.np.arraymath  # noqa: F401
    finally:
        del sys.modules["scipy.linalg"]


_load_numba_numpy_support_without_scipy()


class ContentLocator(UserProvidedCacheLocator):
    """NUMBA_CACHE_DIR, in a folder named by the source file's content instead of its path.

    numba names the folder after the source's directory, and `flwr run` installs the app under
    a fresh temporary FLWR_HOME every run: each run's actors would compile from scratch (10-30 s
    each, benchmarks/RESULTS.md) and leave one more folder behind. Equal sources share their
    compiled code; an edited one gets a folder of its own (numba also checks the source's hash on
    loading). numba keys each entry by the target CPU too, so a cache never serves code compiled
    for another CPU."""

    @classmethod
    def get_suitable_cache_subpath(cls, py_file: str) -> str:
        with open(py_file, "rb") as source:
            return "fairfl-kernels-" + hashlib.sha256(source.read()).hexdigest()[:16]


def kernel(function):
    """`njit(cache=True)`, IEEE-exact, with the cache found by `ContentLocator` (numba's own
    locations after it if that directory is unusable); numba picks a function's locator when
    decorating it."""
    locators = f"{__name__}.ContentLocator,InTreeCacheLocator,UserWideCacheLocator"
    saved, numba_config.CACHE_LOCATOR_CLASSES = numba_config.CACHE_LOCATOR_CLASSES, locators
    try:
        return njit(cache=True, fastmath=False)(function)
    finally:
        numba_config.CACHE_LOCATOR_CLASSES = saved
