"""The synthetic PUMS generator: deterministic, PUMS-coded, learnable, fair-gapped, reversible."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from folktables import ACSDataSource, acs
from folktables.load_acs import _STATE_CODES
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from clients.synthetic import BLANKABLE, COLUMNS, synthetic_pums, write_folktables_fixture
from core.tasks import MISSING, TASKS, Binned, Numeric, OneHot, Task, encode

NORMAL = ("AL", "OH", "WA")
REVERSED = ("TX", "VT")
ROWS = 1500
PROBLEMS = {"income": acs.ACSIncome, "employment": acs.ACSEmployment}
PREPROCESS = {"income": acs.adult_filter, "employment": lambda raw: raw}
NUMERIC_RANGES = {"AGEP": (0, 99), "WKHP": (1, 99)}
# Columns PUMS may leave blank among each task's kept rows; blanks reach the task frame as MISSING.
BLANK_COLUMNS = {"income": set(), "employment": {"SCHL", "ESP", "MIG", "MIL", "DREM"}}


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return synthetic_pums([*NORMAL, *REVERSED], seed=7, rows_per_state=ROWS,
                          reversed_states=REVERSED)


def _task_frame(task: str, raw: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    features, label, _ = PROBLEMS[task].df_to_pandas(raw)
    return features, label.to_numpy().ravel().astype(bool)


def _states(raw: pd.DataFrame, states: tuple[str, ...]) -> pd.DataFrame:
    return raw[raw["ST"].isin([int(_STATE_CODES[s]) for s in states])]


def test_same_arguments_give_the_same_frame_and_another_seed_does_not() -> None:
    first = synthetic_pums(["AL", "WY"], seed=3, rows_per_state=300, reversed_states=["WY"])
    again = synthetic_pums(["AL", "WY"], seed=3, rows_per_state=300, reversed_states=["WY"])
    other = synthetic_pums(["AL", "WY"], seed=4, rows_per_state=300, reversed_states=["WY"])
    pd.testing.assert_frame_equal(first, again)
    assert not first.drop(columns="SERIALNO").equals(other.drop(columns="SERIALNO"))


def test_a_states_rows_do_not_depend_on_the_other_states_requested() -> None:
    alone = synthetic_pums(["WY"], seed=5, rows_per_state=400)
    together = synthetic_pums(["AL", "WY", "PR"], seed=5, rows_per_state=400,
                              reversed_states=["AL"])
    wyoming = together[together["ST"] == 56].reset_index(drop=True)
    pd.testing.assert_frame_equal(alone, wyoming)


@pytest.mark.parametrize("rows", [0, 1, 257])
def test_rows_per_state_is_exact(rows: int) -> None:
    records = synthetic_pums(["AK", "DE", "PR"], seed=0, rows_per_state=rows)
    assert records["ST"].value_counts().reindex([2, 10, 72], fill_value=0).tolist() == [rows] * 3


@pytest.mark.parametrize(("state", "census_records"), [("WY", 3064), ("AK", 3546), ("VT", 3767)])
def test_default_size_gives_about_the_states_census_count_of_income_records(state: str, census_records: int) -> None:
    features, _ = _task_frame("income", synthetic_pums([state], seed=0))
    assert abs(len(features) - census_records) < 0.03 * census_records


def test_columns_and_types_match_a_census_person_file(frame: pd.DataFrame) -> None:
    assert list(frame.columns) == list(COLUMNS)
    assert frame["SERIALNO"].str.fullmatch(r"2018(HU|GQ)\d{7}").all()
    assert frame["SERIALNO"].is_unique
    assert set(frame["ST"]) == {int(_STATE_CODES[s]) for s in (*NORMAL, *REVERSED)}
    assert all(frame[c].dtype == np.float64 for c in BLANKABLE)
    assert frame.drop(columns=["SERIALNO", *BLANKABLE]).notna().all().all()
    assert (frame["PWGTP"] >= 1).all()


def test_blanks_follow_the_pums_universes(frame: pd.DataFrame) -> None:
    age = frame["AGEP"]
    own_child = frame["RELP"].isin([2, 3, 4]) & (age < 18)
    blank_exactly_when = {
        "SCHL": age < 3, "ESR": age < 16, "DREM": age < 5, "MIG": age < 1, "MIL": age < 17,
        "PINCP": age < 15, "ESP": ~own_child,
    }
    for column, blank in blank_exactly_when.items():
        assert (frame[column].isna() == blank).all(), column
    working = frame["WKHP"].notna()
    assert frame.loc[working, ["COW", "OCCP"]].notna().all().all()
    assert frame.loc[working, "ESR"].notna().all()
    assert frame.loc[frame["ESR"] == 6, "WKHP"].isna().any()  # not working: WKHP blank
    assert (frame.loc[frame["COW"] == 9, "OCCP"] == 9920).all()


def _valid(feature: Numeric | OneHot | Binned, values: np.ndarray) -> np.ndarray:
    if isinstance(feature, OneHot):
        return np.isin(values, feature.codes)
    if isinstance(feature, Binned):
        return (values >= feature.edges[0]) & (values < feature.edges[-1])
    low, high = NUMERIC_RANGES[feature.column]
    return (values >= low) & (values <= high)


@pytest.mark.parametrize("task", sorted(TASKS.values(), key=lambda t: t.name), ids=lambda t: t.name)
def test_task_features_hold_listed_codes_or_allowed_blanks(frame: pd.DataFrame, task: Task) -> None:
    features, _ = _task_frame(task.name, frame)
    raw = PREPROCESS[task.name](frame)
    assert list(features.columns) == task.columns
    blank_columns = set()
    for feature in task.features:
        values = features[feature.column].to_numpy()
        blank = raw[feature.column].isna().to_numpy()
        assert _valid(feature, values[~blank]).all(), feature.column
        assert (values[blank] == MISSING).all(), feature.column
        if blank.any():
            blank_columns.add(feature.column)
    assert blank_columns == BLANK_COLUMNS[task.name]


@pytest.mark.parametrize("task", sorted(PROBLEMS))
def test_every_state_has_both_labels_and_men_and_white_people_have_higher_rates(
    frame: pd.DataFrame, task: str
) -> None:
    for state in (*NORMAL, *REVERSED):
        features, label = _task_frame(task, _states(frame, (state,)))
        assert len(features) > 0.3 * ROWS
        assert 0.15 < label.mean() < 0.85, state
    features, label = _task_frame(task, frame)
    men, white = features["SEX"].to_numpy() == 1, features["RAC1P"].to_numpy() == 1
    assert label[men].mean() - label[~men].mean() > 0.04
    assert label[white].mean() - label[~white].mean() > 0.02


@pytest.mark.parametrize("task", sorted(PROBLEMS))
def test_labels_are_learnable_from_the_features(frame: pd.DataFrame, task: str) -> None:
    features, label = _task_frame(task, _states(frame, NORMAL))
    x = encode(TASKS[task], features)
    half = len(label) // 2
    model = LogisticRegression(max_iter=1000).fit(x[:half], label[:half])
    majority = max(label[half:].mean(), 1 - label[half:].mean())
    assert model.score(x[half:], label[half:]) > majority + 0.07


def test_reversed_states_flip_the_feature_label_relation(frame: pd.DataFrame) -> None:
    normal, normal_label = _task_frame("income", _states(frame, NORMAL))
    flipped, flipped_label = _task_frame("income", _states(frame, REVERSED))
    x = encode(TASKS["income"], normal)
    half = len(normal_label) // 2
    model = LogisticRegression(max_iter=1000).fit(x[:half], normal_label[:half])
    held_out = model.decision_function(x[half:])
    on_reversed = model.decision_function(encode(TASKS["income"], flipped))
    assert roc_auc_score(normal_label[half:], held_out) > 0.8
    assert roc_auc_score(flipped_label, on_reversed) < 0.35

    adults = frame[frame["AGEP"] >= 25]
    for states, sign in ((NORMAL, 1), (REVERSED, -1)):
        features, label = _task_frame("employment", _states(adults, states))
        assert sign * np.corrcoef(features["SCHL"], label)[0, 1] > 0.1, states


def test_fixture_round_trips_through_folktables_offline(tmp_path) -> None:
    states = ["AL", "PR"]
    written = write_folktables_fixture(tmp_path, states, seed=2, rows_per_state=200,
                                       reversed_states=["PR"])
    assert written == tmp_path / "2018" / "1-Year"
    assert sorted(p.name for p in written.iterdir()) == ["psam_p01.csv", "psam_p72.csv"]
    assert (written / "psam_p72.csv").read_text().startswith("RT,SERIALNO,ST,")
    source = ACSDataSource(survey_year="2018", horizon="1-Year", survey="person",
                           root_dir=str(tmp_path))
    read = source.get_data(states=states, download=False)
    expected = synthetic_pums(states, seed=2, rows_per_state=200, reversed_states=["PR"])
    assert (read["RT"] == "P").all()
    pd.testing.assert_frame_equal(read.drop(columns="RT"), expected, check_dtype=False)
