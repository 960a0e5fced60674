"""Task encodings: documented widths, one-hot blocks, fixed scaling, protected groups."""

import numpy as np
import pandas as pd

from core.tasks import EMPLOYMENT, INCOME, Binned, encode, protected_groups


def income_row(**codes) -> dict:
    row = dict(AGEP=40, COW=1, SCHL=21, MAR=1, OCCP=1010, POBP=6, RELP=0, WKHP=50, SEX=1, RAC1P=1)
    row.update(codes)
    return row


def test_input_widths_are_the_documented_ones():
    assert (INCOME.width, EMPLOYMENT.width) == (101, 99)


def test_income_row_encodes_to_one_hot_blocks_and_scaled_numbers():
    x = encode(INCOME, pd.DataFrame([income_row()]))[0]
    assert x.dtype == np.float32
    assert x[0] == np.float32(0.40)  # AGEP / 100
    assert x.sum() == np.float32(0.40 + 0.50 + 8)  # two numeric values and eight one-hot blocks
    assert x[1 + 0] == 1.0  # COW = 1 is the first COW code


def test_occupation_codes_group_by_major_soc_group():
    occp = Binned("OCCP", (0, 500, 800, 1000))
    assert occp.encode(np.array([10, 499, 500, 950])).argmax(axis=1).tolist() == [0, 0, 1, 2]


def test_codes_outside_a_block_encode_as_zeros():
    x = encode(INCOME, pd.DataFrame([income_row(COW=np.nan)]))[0]
    assert x[1:10].sum() == 0.0


def test_missing_employment_answers_have_their_own_indicator():
    row = dict(AGEP=2, SCHL=np.nan, MAR=5, RELP=2, DIS=2, ESP=1, CIT=1, MIG=np.nan, MIL=np.nan,
               ANC=1, NATIVITY=1, DEAR=2, DEYE=2, DREM=np.nan, SEX=2, RAC1P=2)
    x = encode(EMPLOYMENT, pd.DataFrame([row]))[0]
    assert x[1] == 1.0  # SCHL's first indicator is the missing code


def test_encoding_is_row_independent():
    frame = pd.DataFrame([income_row(AGEP=30), income_row(SEX=2, RAC1P=3)])
    both = encode(INCOME, frame)
    assert np.array_equal(both[1], encode(INCOME, frame.iloc[[1]])[0])


def test_protected_groups_are_female_and_non_white_as_group_one():
    frame = pd.DataFrame([income_row(SEX=1, RAC1P=1), income_row(SEX=2, RAC1P=2), income_row(SEX=2, RAC1P=9)])
    groups = protected_groups(frame)
    assert groups["sex"].tolist() == [0, 1, 1]
    assert groups["race"].tolist() == [0, 1, 1]
