"""The same app on Flower's deployment engine: `python -m fl_app.deploy`, a SuperLink and 3 SuperNodes.

Faults on this engine are in tests/test_deployment_faults.py, Ctrl-C and SIGTERM in tests/test_interrupts.py.
"""

import re
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.live import alive, started_pids

REPO = Path(__file__).resolve().parent.parent
STATES = ["AL", "CA", "WY"]
RUN_CONFIG = (f'states="{",".join(STATES)}" data-source="synthetic" synthetic-rows=600 '
              "num-server-rounds=2 local-epochs=1 lr=0.05")


def deploy(*args: str, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "fl_app.deploy", *args], cwd=REPO, text=True, **popen)


def finish(proc: subprocess.Popen, timeout: float) -> tuple[str, str]:
    """Wait; on timeout stop it with SIGTERM (it then tears its federation down) rather than SIGKILL."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        pytest.fail(f"deploy timed out after {timeout} s\n{out[-3000:]}\n{err[-3000:]}")


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    results = tmp_path_factory.mktemp("deploy") / "fedavg"
    proc = deploy("--insecure", "--run-config", f'{RUN_CONFIG} results-dir="{results}"',
                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = finish(proc, timeout=300)
    return results, proc.returncode, out, err


def test_deployment_run_exits_zero(deployed):
    _, code, out, err = deployed
    assert code == 0, out[-3000:] + err[-3000:]
    assert "finished:completed" in err


def test_one_supernode_per_state_was_started(deployed):
    err = deployed[3]
    assert sorted(re.findall(r"^SuperNode (\w\w): pid \d+, port \d+", err, re.M)) == STATES
    assert re.search(r"^SuperLink: pid \d+, port \d+", err, re.M)


def test_deployment_writes_every_contract_file(deployed):
    results = deployed[0]
    assert sorted(p.name for p in results.iterdir() if p.is_file()) == ["config.json", "counts.csv", "metrics.csv",
                                                                        "summary.json"]


def test_deployment_writes_the_same_report_as_run(deployed):
    results, _, _, err = deployed
    assert (results / "report" / "report.md").is_file() and f"report: {results / 'report' / 'report.md'}" in err


def test_counts_have_two_rounds_of_three_states_of_four_groups(deployed):
    counts = pd.read_csv(deployed[0] / "counts.csv")
    assert len(counts) == 2 * len(STATES) * 4
    assert sorted(counts["state"].unique()) == STATES


def test_metrics_have_pooled_mean_and_every_state(deployed):
    metrics = pd.read_csv(deployed[0] / "metrics.csv", keep_default_na=False)
    assert set(metrics[metrics["round"] == 2]["state"]) == {*STATES, "ALL", "MEAN"}


def test_server_log_is_streamed_one_line_per_round(deployed):
    rounds = re.findall(r"\bround +(\d+)/2 \|", deployed[2])
    assert rounds == ["1", "2"]


def test_no_superlink_or_supernode_is_left_running(deployed):
    err = deployed[3]
    pids = started_pids(err)
    assert len(pids) >= 1 + len(STATES)
    assert [p for p in pids if alive(p)] == []
    temp_dir = re.search(r"temp dir (\S+),", err).group(1)
    assert not Path(temp_dir).exists()
    left = subprocess.run(["pgrep", "-f", temp_dir], capture_output=True, text=True)
    assert left.stdout.strip() == ""


def test_bad_config_fails_before_starting_anything(tmp_path):
    results = tmp_path / "never"
    proc = deploy("--insecure", "--run-config", f'task="health" results-dir="{results}"',
                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, err = finish(proc, timeout=60)
    assert proc.returncode == 2
    assert "unknown task 'health'" in err
    assert "pid" not in err and not results.exists()
