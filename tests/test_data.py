"""Per-state data: seeded 80/20 split, stable across runs, calls and other states."""

import numpy as np

from clients.data import build_state_data, split_indices
from core.tasks import INCOME, encode


def test_split_is_eighty_twenty_and_a_partition():
    train, test = split_indices(1000, seed=0, state="CA")
    assert (len(train), len(test)) == (800, 200)
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(1000))


def test_split_is_identical_on_every_call():
    a = split_indices(537, seed=3, state="WY")
    b = split_indices(537, seed=3, state="WY")
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_split_depends_on_seed_and_state():
    base = split_indices(500, seed=0, state="CA")[1]
    assert not np.array_equal(base, split_indices(500, seed=1, state="CA")[1])
    assert not np.array_equal(base, split_indices(500, seed=0, state="NY")[1])


def test_state_data_has_encoded_splits_with_labels_and_groups(make_income_frame):
    frame = make_income_frame("AL", 250)
    data = build_state_data(INCOME, frame, seed=0)
    assert (data.state, len(data.train), len(data.test)) == ("AL", 200, 50)
    assert data.train.x.shape == (200, INCOME.width)
    _, test_rows = split_indices(250, 0, "AL")
    assert data.test.y.tolist() == frame["label"].to_numpy()[test_rows].astype(np.float32).tolist()
    assert data.test.groups["sex"].tolist() == (frame["SEX"].to_numpy()[test_rows] == 2).astype(int).tolist()


def test_cached_compact_splits_expand_to_exactly_the_encoding(make_income_frame):
    frame = make_income_frame("AL", 300, seed=4)
    data = build_state_data(INCOME, frame, seed=2)
    train_rows, test_rows = split_indices(300, 2, "AL")
    assert np.array_equal(data.train.x, encode(INCOME, frame.iloc[train_rows]))
    assert np.array_equal(data.test.x, encode(INCOME, frame.iloc[test_rows]))
