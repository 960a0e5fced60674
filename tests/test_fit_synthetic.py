"""Synthetic data fitted to the census: the statistics, the fit, and the committed parameters."""

import json

import numpy as np
import pandas as pd
import pytest

from clients.fit_synthetic import ABSENT_RECORDS, census_targets, fit_knobs, income_statistics, synthetic_statistics
from clients.sources import FOLKTABLES_STATES
from clients.synthetic import PARAMS_PATH, fitted_knobs

# How far a fitted state's synthetic statistics may sit from its census targets: sampling noise
# at the state's size, about 2.5 standard errors in the smallest state (WY, 3,064 records; the rate
# of its few non-White people is the noisiest).
TOLERANCE = {"female": 0.015, "nonwhite": 0.015, "rate": 0.015, "rate_male": 0.03, "rate_female": 0.03,
             "rate_white": 0.03, "rate_nonwhite": 0.06, "auc": 0.025}
PARAMS = json.loads(PARAMS_PATH.read_text())


def test_statistics_are_the_shares_and_rates_of_the_records(make_income_frame):
    frame = make_income_frame("AL", 400)
    stats = income_statistics(frame, seed=0)
    y, female, white = frame["label"], frame["SEX"] == 2, frame["RAC1P"] == 1
    assert stats["records"] == 400
    assert stats["female"] == pytest.approx(female.mean()) and stats["nonwhite"] == pytest.approx(1 - white.mean())
    assert stats["rate"] == pytest.approx(y.mean())
    assert (stats["rate_male"], stats["rate_female"]) == pytest.approx((y[~female].mean(), y[female].mean()))
    assert (stats["rate_white"], stats["rate_nonwhite"]) == pytest.approx((y[white].mean(), y[~white].mean()))
    assert 0.4 < stats["auc"] < 0.6  # the made labels are independent of the features


def test_absent_states_get_their_published_count_and_the_medians(make_income_frame):
    frames = {"AL": make_income_frame("AL", 300), "WY": make_income_frame("WY", 200, seed=1)}
    targets = census_targets(pd.concat(frames.values(), ignore_index=True), seed=0)
    assert sorted(targets) == sorted(["AL", "WY", *ABSENT_RECORDS])
    assert targets["WY"] == income_statistics(frames["WY"], seed=0)
    for state, count in ABSENT_RECORDS.items():
        assert targets[state]["records"] == count
        assert targets[state]["female"] == pytest.approx(np.median([targets["AL"]["female"], targets["WY"]["female"]]))


def test_the_fit_reaches_a_census_like_target():
    target = {"records": 3000, "female": 0.47, "nonwhite": 0.10, "rate": 0.36, "rate_male": 0.47, "rate_female": 0.24,
              "rate_white": 0.37, "rate_nonwhite": 0.24, "auc": 0.83}
    knobs, achieved = fit_knobs("WY", target, seed=0, calibration_rows=8000, steps=5)
    assert abs(achieved["records"] - 3000) < 0.05 * 3000
    for key in ("female", "nonwhite", "rate", "auc"):
        assert abs(achieved[key] - target[key]) < 0.03, key
    assert knobs.sex_gap > 0 and knobs.race_gap > 0


def test_parameters_cover_every_state_and_their_records_match_the_census_targets():
    states = PARAMS["states"]
    assert sorted(states) == sorted(FOLKTABLES_STATES)
    for state, fit in states.items():
        target, achieved = fit["target"], fit["achieved"]
        assert abs(achieved["records"] - target["records"]) < 0.03 * target["records"], state
        for key, tolerance in TOLERANCE.items():
            assert abs(achieved[key] - target[key]) < tolerance, (state, key)


def test_absent_states_are_documented_and_sized_by_their_published_counts():
    assert "median" in PARAMS["absent_states"]
    assert {s: PARAMS["states"][s]["target"]["records"] for s in ABSENT_RECORDS} == ABSENT_RECORDS


@pytest.mark.parametrize("state", ["WY", "VT"])
def test_the_committed_knobs_reproduce_the_recorded_statistics(state):
    achieved = synthetic_statistics(state, fitted_knobs()[state], PARAMS["seed"])
    recorded = PARAMS["states"][state]["achieved"]
    # Rates are counts of the generated records (recorded to 4 decimals). The AUC comes from
    # scikit-learn's logistic fit, whose BLAS-driven optimizer ends in other last digits on other
    # CPUs (0.83896 here on a Zen 5 against the recorded 0.8388), so it gets 1e-3.
    assert {k: v for k, v in achieved.items() if k != "auc"} == pytest.approx(
        {k: v for k, v in recorded.items() if k != "auc"}, abs=1e-4)
    assert achieved["auc"] == pytest.approx(recorded["auc"], abs=1e-3)
