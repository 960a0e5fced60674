"""Checkpoint and resume: a run killed at any moment continues to the results an uninterrupted run writes."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from flwr.common.config import get_fused_config_from_dir

from fl_app.config import ConfigError
from fl_app.setup import build_run
from recorder.checkpoint import CHECKPOINT_FILE, Checkpoint, load_checkpoint, save_checkpoint
from recorder.files import ResultsError, ResultsWriter
from tests.conftest import REAL_RUN_CONFIG, REPO, run_in_process, run_sh

FEDAVG = {"states": "AL,CA,WY", "data-source": "synthetic", "synthetic-rows": 1500, "num-server-rounds": 4,
          "local-epochs": 2, "lr": 0.3, "batch-size": 16}
IFCA = {"strategy": "ifca", "states": "AL,CA,OH,TX,VT,WA", "synthetic-reversed": "TX,VT,WA", "data-source": "synthetic",
        "synthetic-rows": 1500, "num-server-rounds": 4, "local-epochs": 1, "lr": 0.1, "warmup-rounds": 1,
        "fail-prob": 0.3}
PERFEDAVG = {**FEDAVG, "strategy": "perfedavg", "num-server-rounds": 3, "meta-lr": 0.05, "adapt-steps": 3}
LOCAL = {**FEDAVG, "strategy": "local", "fail-prob": 0.3}  # failed clients keep their restored models
DITTO = {**FEDAVG, "strategy": "ditto", "fail-prob": 0.3}
SETTINGS = {"fedavg": FEDAVG, "ifca": IFCA, "perfedavg": PERFEDAVG, "local": LOCAL, "ditto": DITTO}
RESULT_FILES = {"fedavg": ("metrics.csv", "counts.csv"), "ifca": ("metrics.csv", "counts.csv", "clusters.csv"),
                "perfedavg": ("metrics.csv", "counts.csv"), "local": ("metrics.csv", "counts.csv"),
                "ditto": ("metrics.csv", "counts.csv")}

# Runs the in-process federation and dies by SIGKILL just before the n-th write of one results
# file: a CSV's append of a round's rows, or the checkpoint's replacement (written to its
# temporary file, not yet in place).
KILL_SCRIPT = """
import json, os, signal, sys
from pathlib import Path
sys.path[:0] = [{tests!r}, {repo!r}]
from recorder.files import ResultsWriter
from tests.conftest import run_in_process
overrides, results, name, nth = json.loads(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
real_replace, real_append, seen = os.replace, ResultsWriter.append, []
def writing(path):
    if Path(path).name == name:
        seen.append(path)
        if len(seen) == nth:
            os.kill(os.getpid(), signal.SIGKILL)
def replace(src, dst):
    writing(dst)
    real_replace(src, dst)
def append(writer, file, frame):
    writing(file)
    real_append(writer, file, frame)
os.replace, ResultsWriter.append = replace, append
run_in_process(overrides, results)
"""


def killed_in_process(overrides: dict, results: Path, name: str, nth: int) -> None:
    script = KILL_SCRIPT.format(tests=str(REPO / "tests"), repo=str(REPO))
    proc = subprocess.run([sys.executable, "-c", script, json.dumps(overrides), str(results), name, str(nth)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def killed(tmp_path_factory):
    """killed(strategy, file, nth, to): a copy at `to` of what a run left when killed before the
    n-th replacement of `file` (each kill is made once per module)."""
    made = {}

    def copy(strategy: str, name: str, nth: int, to: Path) -> Path:
        if (strategy, name, nth) not in made:
            made[strategy, name, nth] = tmp_path_factory.mktemp("killed") / "results"
            killed_in_process(SETTINGS[strategy], made[strategy, name, nth], name, nth)
        shutil.copytree(made[strategy, name, nth], to)
        return to

    return copy


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """In-process results of each strategy's settings, run without interruption."""
    base = tmp_path_factory.mktemp("uninterrupted")
    return {name: run_in_process(settings, base / name) for name, settings in SETTINGS.items()}


# --- the checkpoint file and the rollback of the CSVs --------------------------------------------

def test_checkpoint_round_trips_arrays_state_and_sizes(tmp_path):
    arrays = {"c0.fc1.weight": np.arange(6, dtype=np.float32).reshape(2, 3), "c1.fc2.bias": np.array([np.nan], np.float32)}
    saved = Checkpoint(3, arrays, {"clusters": {"CA": 1}, "summary_row": {"pooled_accuracy": 0.75}}, {"metrics.csv": 120})
    save_checkpoint(tmp_path, saved)
    loaded = load_checkpoint(tmp_path)
    assert (loaded.server_round, loaded.strategy_state, loaded.csv_sizes) == (3, saved.strategy_state, saved.csv_sizes)
    assert list(loaded.arrays) == list(arrays)
    np.testing.assert_array_equal(loaded.arrays["c0.fc1.weight"], arrays["c0.fc1.weight"])
    assert loaded.arrays["c0.fc1.weight"].dtype == np.float32


def test_a_directory_without_checkpoint_has_none(tmp_path):
    assert load_checkpoint(tmp_path) is None


def test_an_unreadable_checkpoint_is_named(tmp_path):
    (tmp_path / CHECKPOINT_FILE).write_bytes(b"garbage")
    with pytest.raises(ResultsError, match=f"checkpoint '{tmp_path / CHECKPOINT_FILE}' cannot be read"):
        load_checkpoint(tmp_path)


def test_roll_back_cuts_csvs_to_the_recorded_sizes_and_drops_later_files(tmp_path):
    writer = ResultsWriter(tmp_path)
    writer.append("metrics.csv", pd.DataFrame({"round": [1], "value": [0.5]}))
    sizes = writer.csv_sizes()
    writer.append("metrics.csv", pd.DataFrame({"round": [2], "value": [0.7]}))
    writer.append("clusters.csv", pd.DataFrame({"round": [2], "cluster": [0]}))
    (tmp_path / "counts.csv.tmp").write_text("round\n")
    writer.roll_back(sizes)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv"]
    assert (tmp_path / "metrics.csv").read_text() == "round,value\n1,0.5\n"


def test_roll_back_refuses_a_file_shorter_than_recorded(tmp_path):
    (tmp_path / "metrics.csv").write_text("round\n")
    with pytest.raises(ResultsError, match="metrics.csv' has 6 bytes but the checkpoint recorded 60"):
        ResultsWriter(tmp_path).roll_back({"metrics.csv": 60})


# --- killed in-process runs ----------------------------------------------------------------------

@pytest.fixture
def killed_fedavg(tmp_path, killed):
    """A FedAvg run killed after writing round 3's rows but before its checkpoint."""
    return killed("fedavg", CHECKPOINT_FILE, 3, tmp_path / "r")


def test_a_run_killed_mid_round_leaves_whole_rounds_in_every_file(tmp_path, killed):
    results = killed("ifca", "metrics.csv", 3, tmp_path / "r")  # clusters.csv and counts.csv already hold round 3
    counts = pd.read_csv(results / "counts.csv")
    metrics = pd.read_csv(results / "metrics.csv", keep_default_na=False)
    assert counts.groupby("round").size().to_dict() == {1: 24, 2: 24, 3: 24}
    assert sorted(metrics["round"].unique()) == [1, 2]
    assert metrics[metrics["metric"] == "failed_evaluations"]["round"].tolist() == [1, 2]  # each round's last row
    assert load_checkpoint(results).server_round == 2


@pytest.mark.parametrize(("strategy", "name", "nth"), [
    ("fedavg", "counts.csv", 1),      # before anything of round 1 was written: starts over
    ("fedavg", CHECKPOINT_FILE, 3),   # round 3 fully written, its checkpoint not
    ("ifca", "clusters.csv", 2),      # round 3's first file (round 1 is warm-up, without clusters)
    ("ifca", "metrics.csv", 3),       # round 3 half written
    ("perfedavg", "metrics.csv", 2),  # round 2 half written (counts of two models)
    ("local", CHECKPOINT_FILE, 3),    # round 3 fully written, its checkpoint (every client's model) not
    ("local", "metrics.csv", 2),      # round 2 half written
    ("ditto", CHECKPOINT_FILE, 2),    # round 2 fully written, its checkpoint (global and personal models) not
    ("ditto", "metrics.csv", 3),      # round 3 half written
])
def test_a_killed_run_resumes_to_the_uninterrupted_results(strategy, name, nth, tmp_path, killed, federation,
                                                           uninterrupted):
    results = killed(strategy, name, nth, tmp_path / "r")
    federation({**SETTINGS[strategy], "resume": str(results)}, results)
    for file in RESULT_FILES[strategy]:
        assert (results / file).read_text() == (uninterrupted[strategy] / file).read_text(), file
    assert sorted(p.name for p in results.iterdir()) == sorted(p.name for p in uninterrupted[strategy].iterdir())


def test_a_resumed_run_may_stop_at_fewer_rounds(killed_fedavg, federation, uninterrupted):
    results = killed_fedavg
    federation({**FEDAVG, "num-server-rounds": 3, "resume": str(results)}, results)
    reference = (uninterrupted["fedavg"] / "metrics.csv").read_text().splitlines()
    assert (results / "metrics.csv").read_text().splitlines() == [line for line in reference if not line.startswith("4,")]
    assert json.loads((results / "summary.json").read_text())["rounds"] == 3


def test_resume_records_when_it_continued(killed_fedavg, federation):
    results = killed_fedavg
    federation({**FEDAVG, "resume": str(results)}, results)
    assert [r["after_round"] for r in json.loads((results / "config.json").read_text())["resumed"]] == [2]


# --- what resume refuses, before touching anything ------------------------------------------------

def resume_config(results: Path, **changes) -> dict:
    return get_fused_config_from_dir(REPO, {**FEDAVG, "results-dir": str(results), "resume": str(results), **changes})


def test_resume_refuses_a_changed_config_naming_the_keys(killed_fedavg):
    before = {p.name: p.read_bytes() for p in killed_fedavg.iterdir()}
    with pytest.raises(ConfigError, match=r"key\(s\) local-epochs, lr differ \(local-epochs 2 -> 3; lr 0.3 -> 0.1\)"):
        build_run(resume_config(killed_fedavg, lr=0.1, **{"local-epochs": 3}), datetime.now(UTC), REPO)
    assert {p.name: p.read_bytes() for p in killed_fedavg.iterdir()} == before


def test_resume_refuses_fewer_rounds_than_completed(killed_fedavg):
    with pytest.raises(ConfigError, match=r"'num-server-rounds' \(1\) is below the 2 rounds"):
        build_run(resume_config(killed_fedavg, **{"num-server-rounds": 1}), datetime.now(UTC), REPO)


def test_resume_refuses_a_finished_run(uninterrupted):
    finished = uninterrupted["fedavg"]
    with pytest.raises(ConfigError, match="has finished"):
        build_run(resume_config(finished), datetime.now(UTC), REPO)


def test_resume_refuses_a_directory_that_is_no_run(tmp_path):
    with pytest.raises(ConfigError, match="holds no config.json"):
        build_run(resume_config(tmp_path), datetime.now(UTC), REPO)


def test_resume_refuses_another_results_dir(killed_fedavg, tmp_path):
    with pytest.raises(ConfigError, match="'resume' .* and 'results-dir' .* name different directories"):
        build_run(resume_config(killed_fedavg, **{"results-dir": str(tmp_path / "other")}), datetime.now(UTC), REPO)


# --- the real thing: SIGKILL a `./run.sh run` (flwr run) and resume it ----------------------------

def marked_processes(marker: str) -> dict[int, dict[str, str]]:
    """pid -> environment of every process whose environment carries `marker` (what this test started)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = dict(v.split("=", 1) for v in (entry / "environ").read_bytes().decode(errors="replace").split("\0") if "=" in v)
        except OSError:
            continue
        if env.get("FAIRFL_TEST_MARKER") == marker:
            found[int(entry.name)] = env
    return found


def kill_marked(marker: str) -> set[str]:
    """SIGKILL every marked process (the CLI, the SuperLink, the ServerApp, Ray) until none is left.

    Returns the FLWR_HOME directories they used, to be removed afterwards.
    """
    homes: set[str] = set()
    deadline = time.monotonic() + 30
    while (procs := marked_processes(marker)) and time.monotonic() < deadline:
        for pid, env in procs.items():
            homes.add(env.get("FLWR_HOME", ""))
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)
    assert not marked_processes(marker), "processes survived SIGKILL"
    return {h for h in homes if h.startswith("/tmp/fairfl-flwr-")}


def rounds_written(metrics: Path) -> set[int]:
    if not metrics.exists():
        return set()
    return {int(line.split(",", 1)[0]) for line in metrics.read_text().splitlines()[1:] if line}


def test_a_killed_flwr_run_resumes_to_the_uninterrupted_metrics(tmp_path, real_fedavg_run):
    results, marker = tmp_path / "killed", uuid.uuid4().hex
    env = {**os.environ, "FAIRFL_VENV": sys.prefix, "FAIRFL_TEST_MARKER": marker}
    run = subprocess.Popen(["bash", str(REPO / "run.sh"), "run", "--run-config", f'{REAL_RUN_CONFIG} results-dir="{results}"'],
                           cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 400
        while 2 not in rounds_written(results / "metrics.csv"):
            assert run.poll() is None and time.monotonic() < deadline, "the run ended or stalled before round 2"
            time.sleep(0.1)
    finally:
        homes = kill_marked(marker)
        run.wait(timeout=30)
        for home in homes:
            shutil.rmtree(home, ignore_errors=True)
    assert not (results / "summary.json").exists() and 1 <= load_checkpoint(results).server_round < 6

    proc = run_sh("run", "--run-config", f'{REAL_RUN_CONFIG} results-dir="{results}" resume="{results}"')
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (results / "metrics.csv").read_text() == (real_fedavg_run / "metrics.csv").read_text()
