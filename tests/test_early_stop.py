"""Early stop on validation (`stop-patience`, `stop-min-delta`): the tracker's rule, a run that stops
at the round its own validation losses call for, a resumed run that stops where the uninterrupted
one did, and bad values refused before training."""

import json
import math

import pytest

from analysis.compare import RunResults
from analysis.stats import chosen_round
from analysis.study_tables import Arm, convergence_table, load_val_metrics
from core.plateau import Plateau
from fl_app.config import ConfigError, RunConfig, parse_config, resume_conflicts
from recorder.checkpoint import CHECKPOINT_FILE
from recorder.tables import pooled_loss
from tests.conftest import run_in_process
from tests.test_resume import killed_in_process

CEILING = 12
STOPS = {"states": "AL,CA,WY", "data-source": "synthetic", "synthetic-rows": 600, "num-server-rounds": CEILING,
         "local-epochs": 1, "lr": 1.0, "batch-size": 16, "train-rows": 200, "test-rows": 200, "val-rows": 100,
         "stop-patience": 2}
FILES = ("metrics.csv", "counts.csv", "val_metrics.csv", "val_counts.csv", "summary.json")


def first_stop(rounds, losses, patience, min_delta):
    """The first round the tracker, fed the recorded losses in order, says has plateaued (None: never)."""
    plateau = Plateau(patience, min_delta)
    for r, loss in zip(rounds, losses):
        plateau.observe(r, loss)
        if plateau.reached(r):
            return r
    return None


# --- the tracker ---------------------------------------------------------------------------------

def test_the_tracker_stops_patience_rounds_after_the_best():
    plateau = Plateau(2, 0.0)
    for r, loss in [(1, 0.7), (2, 0.6), (3, 0.65), (4, 0.6)]:
        plateau.observe(r, loss)
    assert (plateau.best_round, plateau.best_loss) == (2, 0.6)  # an equal loss is no improvement
    assert not plateau.reached(3)
    assert plateau.reached(4)


def test_an_improvement_must_exceed_min_delta():
    plateau = Plateau(3, 0.05)
    for r, loss in [(1, 1.0), (2, 0.96), (3, 0.95), (4, 0.9499)]:
        plateau.observe(r, loss)
    assert plateau.best_round == 4  # 0.9499 < 1.0 - 0.05; 0.96 and 0.95 were not enough
    assert plateau.best_loss == 0.9499


def test_a_nan_loss_never_improves():
    plateau = Plateau(1, 0.0)
    plateau.observe(1, math.nan)
    assert plateau.best_round == 0 and plateau.reached(1)
    plateau.observe(2, 0.5)
    plateau.observe(3, math.nan)
    assert plateau.best_round == 2 and plateau.reached(3)


def test_patience_zero_never_stops():
    plateau = Plateau(0, 0.0)
    plateau.observe(1, 0.5)
    assert not plateau.reached(1000)


def test_a_restored_tracker_continues_like_the_original():
    original = Plateau(3, 0.01)
    for r, loss in [(1, 0.8), (2, 0.7), (3, 0.72)]:
        original.observe(r, loss)
    copy = Plateau(3, 0.01)
    copy.restore(json.loads(json.dumps(original.state())))
    for tracker in (original, copy):
        tracker.observe(4, 0.695)  # not 0.01 below 0.7
    assert (copy.best_round, copy.best_loss) == (original.best_round, original.best_loss) == (2, 0.7)
    assert [copy.reached(r) for r in (4, 5)] == [original.reached(r) for r in (4, 5)] == [False, True]
    fresh = Plateau(3, 0.01)
    fresh.restore(fresh.state())  # no finite loss yet: stored as None, back to infinity
    assert math.isinf(fresh.best_loss) and fresh.best_round == 0


# --- runs ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def stopped(tmp_path_factory):
    return run_in_process(STOPS, tmp_path_factory.mktemp("stop") / "results")


def test_a_run_stops_at_the_round_its_validation_losses_call_for(stopped):
    rounds, losses = pooled_loss(load_val_metrics(stopped))
    expected = first_stop(rounds, losses, 2, 0.0)
    assert expected is not None and expected < CEILING
    summary = json.loads((stopped / "summary.json").read_text())
    assert summary["rounds"] == expected == rounds[-1]
    assert summary["stopped"] == {"round": expected, "reason": "plateau", "plateaued": True,
                                  "best_val_round": chosen_round(rounds, losses), "patience": 2, "min_delta": 0.0}
    assert expected - summary["stopped"]["best_val_round"] == 2
    assert not (stopped / CHECKPOINT_FILE).exists()


def test_min_delta_decides_what_counts_as_an_improvement(tmp_path):
    results = run_in_process({**STOPS, "stop-min-delta": 1.0}, tmp_path / "r")  # no loss falls by 1
    stopped = json.loads((results / "summary.json").read_text())["stopped"]
    assert (stopped["round"], stopped["best_val_round"], stopped["reason"]) == (3, 1, "plateau")
    assert pooled_loss(load_val_metrics(results))[0] == [1, 2, 3]


def test_a_run_that_never_plateaus_reaches_the_ceiling(tmp_path):
    results = run_in_process({**STOPS, "lr": 0.3, "stop-patience": 3}, tmp_path / "r")
    rounds, losses = pooled_loss(load_val_metrics(results))
    assert rounds[-1] == CEILING and first_stop(rounds, losses, 3, 0.0) is None
    stopped = json.loads((results / "summary.json").read_text())["stopped"]
    assert (stopped["round"], stopped["reason"], stopped["plateaued"]) == (CEILING, "ceiling", False)


def test_the_study_reads_converged_from_the_stop(tmp_path):
    # a min-delta no loss beats: plateaued at round 3 by the stop's rule while the loss still falls,
    # so only the summary's `stopped` (not the analysis' own plateau rule) makes it converged
    plateaued = run_in_process({**STOPS, "stop-min-delta": 1.0}, tmp_path / "p")
    ceiling = run_in_process({**STOPS, "lr": 0.3, "stop-patience": 3, "seed": 1}, tmp_path / "c")
    arm = Arm("fedavg", "-", {0: RunResults.load(plateaued), 1: RunResults.load(ceiling)},
              {0: load_val_metrics(plateaued), 1: load_val_metrics(ceiling)})
    table = convergence_table([arm]).set_index("seed")
    assert table["final_round"].tolist() == [3, CEILING]
    assert table["plateau_round"].tolist()[0] == 3  # the analysis' rule alone would say: still improving
    assert table["converged"].tolist() == [True, False]


def test_patience_zero_runs_to_the_ceiling_without_a_stopped_entry(tmp_path):
    results = run_in_process({**STOPS, "stop-patience": 0, "num-server-rounds": 8}, tmp_path / "r")
    summary = json.loads((results / "summary.json").read_text())
    assert summary["rounds"] == 8 and "stopped" not in summary


def test_a_resumed_run_stops_where_the_uninterrupted_one_did(stopped, tmp_path):
    summary = json.loads((stopped / "summary.json").read_text())["stopped"]
    # killed before round `round`'s checkpoint: the best round is behind the checkpoint, the stop ahead
    results = tmp_path / "r"
    killed_in_process(STOPS, results, CHECKPOINT_FILE, summary["round"])
    assert not (results / "summary.json").exists()
    run_in_process({**STOPS, "resume": str(results)}, results)
    for name in FILES:
        assert (results / name).read_bytes() == (stopped / name).read_bytes(), name


# --- config --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "expected"), [
    ({"stop-patience": -1}, "config key 'stop-patience' must be >= 0, got -1"),
    ({"stop-min-delta": -0.1}, "config key 'stop-min-delta' must be >= 0, got -0.1"),
    ({"stop-min-delta": math.nan}, "config key 'stop-min-delta' must be a finite number, got nan"),
    ({"stop-min-delta": math.inf}, "config key 'stop-min-delta' must be a finite number, got inf"),
    ({"stop-patience": 3}, "config key 'stop-patience' (3) stops on the pooled validation loss, and the run has no "
                           "validation split: set 'val-rows' > 0"),
    ({"stop-patience": 3, "train-rows": 100, "test-rows": 100},
     "config key 'stop-patience' (3) stops on the pooled validation loss"),
])
def test_bad_stop_values_fail_with_one_message(raw, expected):
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    assert expected in str(err.value)


def test_validation_from_val_rows_or_the_paper_preset_allows_a_stop():
    assert parse_config({"stop-patience": 3, "train-rows": 100, "test-rows": 100, "val-rows": 50}).stop_patience == 3
    config = parse_config({"stop-patience": 3, "stop-min-delta": 0.001, "preset": "paper"})
    assert (config.stop_patience, config.stop_min_delta, config.val_rows) == (3, 0.001, 2000)


def test_a_resume_may_not_change_the_stop():
    before = RunConfig().to_dict()
    assert resume_conflicts(before, {**before, "stop-patience": 5}) == ["stop-patience"]
    assert resume_conflicts(before, {**before, "stop-min-delta": 0.01}) == ["stop-min-delta"]
