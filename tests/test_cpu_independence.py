"""Same seed, same bytes on any x86-64 CPU: the reference cases, run in a process that computes
as an older CPU would, write exactly the recorded bytes.

That process compiles the kernels for numba's generic x86-64 target (SSE2 vectors, no FMA)
into an empty cache, runs numpy's baseline loops only (none of its AVX2/AVX-512 dispatch, whose
exp and log round differently), torch's default kernels, and glibc's libm without its FMA
and AVX2 variants. The recorded references come from the host's own CPU (tests/test_reference.py
checks those in-process), so equal bytes mean no result depends on which of them ran.
"""

import os
import subprocess
import sys
from pathlib import Path

from numpy._core._multiarray_umath import __cpu_dispatch__

from tests.reference.record import CASES, FILES, HERE

REPO = Path(__file__).resolve().parent.parent


def other_cpu_env(cache_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "NUMBA_CPU_NAME": "generic",
        "NUMBA_CACHE_DIR": str(cache_dir),
        "NPY_DISABLE_CPU_FEATURES": " ".join(__cpu_dispatch__),
        "ATEN_CPU_CAPABILITY": "default",
        "GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX2,-FMA,-AVX512F",
        "PYTHONPATH": str(REPO),
    }


def test_reference_cases_computed_as_a_generic_cpu_write_the_recorded_bytes(tmp_path):
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "tests.reference.record", "--out", str(out)], cwd=REPO,
                          env=other_cpu_env(tmp_path / "numba"), capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    assert any((tmp_path / "numba").rglob("*.nbi")), "the kernels were not compiled into the fresh cache"
    for case in sorted(CASES):
        assert sorted(p.name for p in (out / case).iterdir()) == sorted(p.name for p in (HERE / case).iterdir())
    differing = [f"{case}/{name}" for case in sorted(CASES) for name in FILES
                 if (HERE / case / name).exists() and (out / case / name).read_bytes() != (HERE / case / name).read_bytes()]
    assert differing == []
