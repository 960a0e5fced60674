"""The paper's encoding (widths 54 / 109) and its per-client standardization on the training split only."""

import numpy as np
import pandas as pd
import pytest

from clients.data import StateData, build_state_codes, build_state_data, fit_standardizer, partition_indices
from clients.shards import ClientId, shard_positions
from clients.sources import Source, state_records
from core.tasks import EMPLOYMENT, INCOME, PAPER_EMPLOYMENT, PAPER_INCOME, TASKS, encode, task_for

# The predecessor's income columns, by hand: five plain numbers, then one indicator per code.
INCOME_COLUMNS = [
    "AGEP", "OCCP", "POBP", "RELP", "WKHP",
    *[f"COW={c}" for c in range(1, 10)], *[f"SCHL={c}" for c in range(1, 25)], *[f"MAR={c}" for c in range(1, 6)],
    *[f"SEX={c}" for c in (1, 2)], *[f"RAC1P={c}" for c in range(1, 10)],
]
# Employment's blocks: the 2018 PUMS dictionary's codes of each feature plus its one "N/A" category
# (folktables' generate_categories lists one per feature, the blank code or its default N/A).
EMPLOYMENT_BLOCKS = {
    "AGEP": 1, "SCHL": 24 + 1, "MAR": 5 + 1, "RELP": 18 + 1, "DIS": 2 + 1, "ESP": 8 + 1, "CIT": 5 + 1,
    "MIG": 3 + 1, "MIL": 4 + 1, "ANC": 5 + 1, "NATIVITY": 2 + 1, "DEAR": 2 + 1, "DEYE": 2 + 1, "DREM": 2 + 1,
    "SEX": 2 + 1, "RAC1P": 9 + 1,
}
BLANK_CODED = {"SCHL", "ESP", "MIG", "MIL", "DREM"}  # the dictionary lists a blank code for these


def income_records() -> pd.DataFrame:
    return pd.DataFrame([
        dict(AGEP=40, COW=3, SCHL=21, MAR=1, OCCP=1010, POBP=6, RELP=0, WKHP=50, SEX=2, RAC1P=6),
        dict(AGEP=23, COW=9, SCHL=1, MAR=5, OCCP=4720, POBP=303, RELP=17, WKHP=15, SEX=1, RAC1P=1),
        dict(AGEP=67, COW=np.nan, SCHL=24, MAR=2, OCCP=9920, POBP=554, RELP=16, WKHP=99, SEX=2, RAC1P=9),
    ])


def expected_income_row(record: pd.Series) -> list[float]:
    return [float(record[name]) if "=" not in name else float(record[name.split("=")[0]] == int(name.split("=")[1]))
            for name in INCOME_COLUMNS]


def employment_frame(rows: int = 600) -> pd.DataFrame:
    """Synthetic PUMS records through folktables' ACSEmployment, as the ClientApp reads them."""
    return state_records(Source("synthetic", "", ("AL",)), PAPER_EMPLOYMENT, "AL", 0, rows)


def test_paper_widths_are_54_and_109():
    assert (PAPER_INCOME.width, PAPER_EMPLOYMENT.width) == (54, 109)


def test_income_records_encode_column_by_column_as_built_by_hand():
    records = income_records()
    x = encode(PAPER_INCOME, records)
    assert len(INCOME_COLUMNS) == 54
    for i in range(len(records)):
        assert x[i].tolist() == expected_income_row(records.iloc[i])


def test_employment_width_is_agep_and_each_features_dictionary_codes_plus_one_na():
    assert {f.column: f.width for f in PAPER_EMPLOYMENT.features} == EMPLOYMENT_BLOCKS
    assert sum(EMPLOYMENT_BLOCKS.values()) == 109


def test_each_employment_record_lights_exactly_one_column_per_categorical_block():
    frame = employment_frame()
    x = encode(PAPER_EMPLOYMENT, frame)
    start = 1
    for feature in PAPER_EMPLOYMENT.features[1:]:
        block = x[:, start : start + feature.width]
        assert (block.sum(axis=1) == 1).all(), feature.column
        na = block[:, 0]  # the N/A column comes first
        if feature.column in BLANK_CODED:
            assert np.array_equal(na, (frame[feature.column].to_numpy() == 0).astype(np.float32)), feature.column
        else:
            assert not na.any(), feature.column
        start += feature.width


def test_relp_zero_is_the_reference_person_not_a_blank():
    row = dict(AGEP=30, SCHL=np.nan, MAR=1, RELP=0, DIS=2, ESP=np.nan, CIT=1, MIG=1, MIL=4, ANC=1,
               NATIVITY=1, DEAR=2, DEYE=2, DREM=2, SEX=1, RAC1P=1)
    x = encode(PAPER_EMPLOYMENT, pd.DataFrame([row]))[0]
    relp = 1 + 25 + 6  # after AGEP, SCHL and MAR
    assert x[0] == 30.0 and x[1] == 1.0  # plain age; SCHL's N/A column is lit by the blank
    assert x[relp : relp + 19].tolist() == [0.0, 1.0] + [0.0] * 17


@pytest.mark.parametrize("task", [INCOME, EMPLOYMENT, PAPER_INCOME, PAPER_EMPLOYMENT], ids=lambda t: t.name)
def test_every_feature_table_row_has_at_most_one_nonzero(task, make_income_frame):
    frame = make_income_frame("AL", 400) if task.name == "income" else employment_frame()
    codes = build_state_codes(task, frame, seed=0)
    assert all((np.count_nonzero(table, axis=1) <= 1).all() for table in codes.tables)


def test_task_for_gives_the_grouped_tasks_themselves_and_the_paper_ones():
    assert task_for("income") is TASKS["income"]
    assert task_for("employment", "grouped") is EMPLOYMENT
    assert task_for("employment", "paper") is PAPER_EMPLOYMENT


def test_an_unknown_encoding_is_named_with_the_choices():
    with pytest.raises(ValueError, match="unknown encoding 'folk'; valid choices: grouped, paper"):
        task_for("income", "folk")


def _train_matrix(frame: pd.DataFrame, seed: int, rows: tuple[int, int, int]) -> np.ndarray:
    train, _, _ = partition_indices(len(frame), seed, "AL", *rows)
    return encode(PAPER_INCOME, frame.iloc[train]).astype(np.float64)


def test_shift_and_scale_are_the_training_splits_mean_and_std(make_income_frame):
    frame = make_income_frame("AL", 500, seed=1)
    data = build_state_data(PAPER_INCOME, frame, 0, 100, 200, 200)
    raw = _train_matrix(frame, 0, (100, 200, 200))
    std = raw.std(axis=0)
    np.testing.assert_allclose(data.standardizer.shift, raw.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(data.standardizer.scale, np.where(std > 0, std, 1.0), rtol=1e-6)
    assert data.standardizer.shift.dtype == data.standardizer.scale.dtype == np.float32


def test_changing_test_and_validation_records_changes_neither_training_inputs_nor_statistics(make_income_frame):
    frame = make_income_frame("AL", 500, seed=1)
    _, test, val = partition_indices(500, 0, "AL", 100, 200, 200)
    changed = frame.copy()
    changed.loc[test[:50], ["AGEP", "OCCP", "WKHP"]] = (95, 9920, 99)
    changed.loc[val[:50], ["POBP", "COW", "SCHL"]] = (554, 9, 1)
    before = build_state_data(PAPER_INCOME, frame, 0, 100, 200, 200)
    after = build_state_data(PAPER_INCOME, changed, 0, 100, 200, 200)
    assert np.array_equal(before.train.x, after.train.x)
    assert np.array_equal(before.standardizer.shift, after.standardizer.shift)
    assert np.array_equal(before.standardizer.scale, after.standardizer.scale)
    assert not np.array_equal(before.test.x, after.test.x)


def test_standardized_training_columns_have_mean_0_and_std_1(make_income_frame):
    frame = make_income_frame("AL", 500, seed=2)
    data = build_state_data(PAPER_INCOME, frame, seed=0)
    varying = _train_matrix(frame, 0, (0, 0, 0)).std(axis=0) > 0
    x = data.train.x.astype(np.float64)
    np.testing.assert_allclose(x[:, varying].mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(x[:, varying].std(axis=0), 1.0, atol=1e-5)


def test_a_column_constant_in_training_gets_scale_1_and_becomes_0(make_income_frame):
    data = build_state_data(PAPER_INCOME, make_income_frame("AL", 300), seed=0)  # its COW codes are 1-8
    cow9 = INCOME_COLUMNS.index("COW=9")
    assert (data.standardizer.shift[cow9], data.standardizer.scale[cow9]) == (0.0, 1.0)
    assert not data.train.x[:, cow9].any()


def test_every_split_is_standardized_with_the_training_statistics(make_income_frame):
    frame = make_income_frame("AL", 500, seed=3)
    data = build_state_data(PAPER_INCOME, frame, 0, 100, 200, 200)
    _, test, val = partition_indices(500, 0, "AL", 100, 200, 200)
    shift, scale = data.standardizer.shift, data.standardizer.scale
    assert np.array_equal(data.test.x, (encode(PAPER_INCOME, frame.iloc[test]) - shift) / scale)
    assert np.array_equal(data.val.x, (encode(PAPER_INCOME, frame.iloc[val]) - shift) / scale)


def test_a_shards_statistics_come_from_its_own_training_records(make_income_frame):
    codes = build_state_codes(PAPER_INCOME, make_income_frame("AL", 600, seed=4), seed=0)
    shard = StateData(codes, ClientId("AL", 1, 3))
    positions = shard_positions(len(codes.train.y), 0, "AL", "train", 1, 3)
    rows = tuple(r[positions] for r in codes.train.rows)
    expected = fit_standardizer(codes.tables, rows)
    assert np.array_equal(shard.standardizer.shift, expected.shift)
    assert np.array_equal(shard.standardizer.scale, expected.scale)
    assert not np.array_equal(shard.standardizer.shift, StateData(codes).standardizer.shift)


def test_fit_standardizer_equals_numpy_on_the_expanded_matrix(make_income_frame):
    codes = build_state_codes(PAPER_INCOME, make_income_frame("AL", 400, seed=5), seed=0)
    x = codes.expand(codes.train).x.astype(np.float64)
    fitted = fit_standardizer(codes.tables, codes.train.rows)
    std = x.std(axis=0)
    np.testing.assert_allclose(fitted.shift, x.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(fitted.scale, np.where(std > 0, std, 1.0), rtol=1e-6)


def test_the_grouped_encoding_is_not_standardized(make_income_frame):
    frame = make_income_frame("AL", 300)
    data = build_state_data(INCOME, frame, seed=0)
    train, _ = partition_indices(300, 0, "AL")[:2]
    assert not data.standardizer.shift.any() and (data.standardizer.scale == 1).all()
    assert np.array_equal(data.train.x, encode(INCOME, frame.iloc[train]))


def test_a_client_without_training_records_cannot_be_standardized(make_income_frame):
    data = build_state_data(PAPER_INCOME, make_income_frame("AL", 300), 0, 0, 100, 100)
    with pytest.raises(ValueError, match="client AL has no training records to standardize its inputs with"):
        _ = data.test
