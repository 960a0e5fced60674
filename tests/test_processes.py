"""Stopping by environment: an orphan in a session of its own that still has the run's
FLWR_HOME is found and stopped; other runs' processes and the caller's own line are left."""

import os
import subprocess
import sys

from tests.live import REPO, alive


def orphan(env_home: str) -> int:
    """A `sleep` that bash leaves behind in a new session (reparented away from us); its pid."""
    out = subprocess.run(["bash", "-c", "setsid sleep 300 >/dev/null 2>&1 < /dev/null & echo $!"], check=True,
                         capture_output=True, text=True, env={**os.environ, "FLWR_HOME": env_home})
    return int(out.stdout)


def stop(entry: str) -> subprocess.CompletedProcess:
    """`processes stop --env ENTRY`, called by a shell that has that environment itself, as run.sh is."""
    return subprocess.run(["bash", "-c", f'"{sys.executable}" -m fl_app.processes stop --grace 5 --env "{entry}"; '
                                         "echo the caller survived"],
                          cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "FLWR_HOME": entry.partition("=")[2]})


def test_an_orphan_with_the_run_s_home_is_stopped_and_others_are_not(tmp_path):
    ours, theirs = orphan(str(tmp_path / "ours")), orphan(str(tmp_path / "theirs"))
    try:
        done = stop(f"FLWR_HOME={tmp_path / 'ours'}")
        assert "the caller survived" in done.stdout, done.stderr
        assert f"stopped pids {ours} " in done.stderr
        assert not alive(ours) and alive(theirs)
    finally:
        for pid in (ours, theirs):
            if alive(pid):
                os.kill(pid, 9)
