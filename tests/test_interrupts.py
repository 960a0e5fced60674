"""Ctrl-C and SIGTERM at the moments that matter, for `python -m fl_app.deploy` and `./run.sh run`:
everything started is stopped, the exit code is 130 (SIGINT) or 143 (SIGTERM), and the results
directory is either not there or resumable.

A terminal's Ctrl-C reaches the whole foreground process group, so "Ctrl-C" here is SIGINT to
the command's process group; SIGTERM goes to its pid only, as `kill PID` sends it. Every
moment is an event the test waits for (a log line, a results row), never a fixed sleep.
"""

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recorder.checkpoint import load_checkpoint
from tests.live import REPO, alive, deploy, marked, rounds_in, run_sh, started_pids

FAST = 'states="AL,CA,WY" data-source="synthetic" synthetic-rows=600 local-epochs=1 lr=0.05 batch-size=16'
HAMMER_S = 0.02


def assert_all_stopped(run, expected_code: int) -> None:
    assert run.finish() == expected_code, run.tail()
    assert marked(run.marker) == {}, run.tail()


def assert_deploy_stopped(run, expected_code: int) -> None:
    assert_all_stopped(run, expected_code)
    pids = started_pids(run.err)
    assert pids and [p for p in pids if alive(p)] == [], run.tail()
    assert not Path(re.search(r"temp dir (\S+),", run.err).group(1)).exists()


def resumable(run_config: str, results: Path) -> bool:
    """The pre-flight check accepts `resume` of this directory (it refuses a broken one)."""
    check = subprocess.run([sys.executable, "-m", "fl_app.check", "--run-config", f'{run_config} resume="{results}"'],
                           cwd=REPO, capture_output=True, text=True, timeout=300)
    return check.returncode == 0


# --- python -m fl_app.deploy ---------------------------------------------------------------------

@pytest.mark.parametrize(("moment", "sig", "code"), [
    (r"^SuperLink: pid \d+", signal.SIGTERM, 143),   # before the SuperLink answers
    (r"^SuperNode AL: pid \d+", signal.SIGINT, 130),  # while the SuperNodes start
])
def test_deploy_stopped_during_start_up_stops_what_it_started(moment, sig, code, tmp_path):
    results = tmp_path / "results"
    run = deploy("--insecure", "--run-config", f'{FAST} num-server-rounds=2 results-dir="{results}"',
                 logs=tmp_path / "logs")
    run.wait_for(moment)
    run.signal(sig)
    assert_deploy_stopped(run, code)
    assert f"interrupted by {signal.Signals(sig).name}" in run.err
    assert not results.exists()  # the ServerApp never started: nothing half-written


def test_deploy_ctrl_c_mid_round_and_again_during_teardown_leaves_a_resumable_run(tmp_path):
    """Ctrl-C once round 1 is logged; then SIGINT and SIGTERM keep coming until deploy exits, so
    some land in its teardown: it still stops everything and exits with the first signal's code."""
    results = tmp_path / "results"
    run_config = f'{FAST} num-server-rounds=3 results-dir="{results}"'
    run = deploy("--insecure", "--run-config", run_config, logs=tmp_path / "logs")
    run.wait_for(r"round\s+1/\d+ \|", stream="out")
    run.signal(signal.SIGINT, group=True)
    deadline = time.monotonic() + 300
    while run.proc.poll() is None and time.monotonic() < deadline:
        run.signal(signal.SIGINT)
        run.signal(signal.SIGTERM)
        time.sleep(HAMMER_S)
    assert_deploy_stopped(run, 130)
    assert "interrupted by SIGINT" in run.err
    assert not (results / "summary.json").exists() and load_checkpoint(results).server_round >= 1
    assert resumable(run_config, results)


# --- ./run.sh run --------------------------------------------------------------------------------

ROUNDS = 60  # rounds take 0.3 s once Ray is up: 60 leave the signal a wide window mid-run
RUN_SH = f'{FAST} num-server-rounds={ROUNDS}'


def test_run_sh_ctrl_c_mid_round_stops_everything_and_the_run_resumes(tmp_path):
    results = tmp_path / "results"
    run = run_sh("run", "--run-config", f'{RUN_SH} results-dir="{results}"', logs=tmp_path / "logs")
    run.wait_until("round 1 written", lambda: 1 in rounds_in(results / "metrics.csv"))
    run.signal(signal.SIGINT, group=True)
    written = max(rounds_in(results / "metrics.csv"))
    assert written < ROUNDS, "the run ended before the signal; the window is too short"
    assert_all_stopped(run, 130)
    done = load_checkpoint(results).server_round
    assert 1 <= done < ROUNDS and not (results / "summary.json").exists()

    again = run_sh("run", "--run-config", f'{RUN_SH} results-dir="{results}" resume="{results}"',
                   logs=tmp_path / "resumed")
    assert_all_stopped(again, 0)
    rows = (results / "metrics.csv").read_text().splitlines()[1:]
    per_round = {r: sum(line.startswith(f"{r},") for line in rows) for r in range(1, ROUNDS + 1)}
    assert len(set(per_round.values())) == 1 and per_round[1] > 0  # every round once, none twice


@pytest.mark.parametrize("moment", ["starting", "mid-round"])
def test_run_sh_sigterm_stops_everything(moment, tmp_path):
    results = tmp_path / "results"
    run = run_sh("run", "--run-config", f'{RUN_SH} results-dir="{results}"', logs=tmp_path / "logs")
    if moment == "starting":  # `flwr run` is starting its local SuperLink
        run.wait_for(r"^flwr run: 3 SuperNodes")
    else:
        run.wait_until("round 1 written", lambda: 1 in rounds_in(results / "metrics.csv"))
    run.signal(signal.SIGTERM)
    assert_all_stopped(run, 143)
    assert "SIGTERM received" in run.err
    assert not (results / "summary.json").exists()
    homes = set(re.findall(r"/tmp/fairfl-flwr-\w+", run.out + run.err))  # run.sh's FLWR_HOME, once flwr printed it
    assert not [h for h in homes if Path(h).exists()]
