"""Per-state sampled train/test/validation partition ("1000_2000_2000") and its shards."""

import numpy as np
import pytest

from clients.data import (
    StateData,
    build_state_codes,
    build_state_data,
    partition_indices,
    partition_sizes,
    split_indices,
)
from clients.shards import ClientId, shard_positions
from core.tasks import INCOME, encode


def test_a_large_state_gets_exactly_the_requested_sizes():
    train, test, val = partition_indices(6000, 0, "CA", 1000, 2000, 2000)
    assert (len(train), len(test), len(val)) == (1000, 2000, 2000)


def test_a_small_state_is_split_in_the_same_proportions():
    assert partition_sizes(2500, 1000, 2000, 2000) == (500, 1000, 1000)
    assert tuple(map(len, partition_indices(2500, 0, "WY", 1000, 2000, 2000))) == (500, 1000, 1000)


def test_proportional_sizes_round_down_and_leave_at_most_two_records():
    assert partition_sizes(2504, 1000, 2000, 2000) == (500, 1001, 1001)  # 500.8, 1001.6, 1001.6
    assert partition_sizes(7, 1000, 2000, 2000) == (1, 2, 2)


def test_training_keeps_one_record_when_its_share_rounds_to_zero():
    assert partition_sizes(2, 1000, 2000, 2000) == (1, 0, 0)
    assert partition_sizes(2, 0, 2000, 2000) == (0, 1, 1)


def test_negative_sizes_are_refused_naming_the_keys():
    with pytest.raises(ValueError, match="train-rows, test-rows and val-rows must be >= 0"):
        partition_sizes(100, 10, -1, 0)


def test_splits_are_disjoint_sorted_rows_of_the_state():
    splits = partition_indices(6000, 0, "CA", 1000, 2000, 2000)
    together = np.concatenate(splits)
    assert len(np.unique(together)) == 5000 and together.min() >= 0 and together.max() < 6000
    assert all((np.diff(s) > 0).all() for s in splits)


def test_the_partition_is_identical_for_a_seed_and_differs_across_seeds_and_states():
    a = partition_indices(3000, 4, "WY", 100, 200, 200)
    assert all(np.array_equal(x, y) for x, y in zip(a, partition_indices(3000, 4, "WY", 100, 200, 200)))
    for other in (partition_indices(3000, 5, "WY", 100, 200, 200), partition_indices(3000, 4, "CA", 100, 200, 200)):
        assert not any(np.array_equal(x, y) for x, y in zip(a, other))


def test_zero_sizes_are_todays_eighty_twenty_split_without_validation():
    train, test, val = partition_indices(537, 3, "WY")
    expected_train, expected_test = split_indices(537, 3, "WY")
    assert np.array_equal(train, expected_train) and np.array_equal(test, expected_test)
    assert len(val) == 0


def test_state_data_holds_the_sampled_splits_and_reports_their_sizes(make_income_frame):
    frame = make_income_frame("AL", 6000)
    data = build_state_data(INCOME, frame, 0, 1000, 2000, 2000)
    assert data.sizes() == {"train": 1000, "test": 2000, "val": 2000}
    _, _, val = partition_indices(6000, 0, "AL", 1000, 2000, 2000)
    assert np.array_equal(data.val.x, encode(INCOME, frame.iloc[val]))
    assert data.val.y.tolist() == frame["label"].to_numpy()[val].astype(np.float32).tolist()


def test_without_validation_rows_the_validation_split_is_empty(make_income_frame):
    data = build_state_data(INCOME, make_income_frame("AL", 250), seed=0)
    assert data.sizes() == {"train": 200, "test": 50, "val": 0}
    assert data.val.x.shape == (0, INCOME.width)
    assert StateData(data.codes, ClientId("AL", 1, 3)).val.x.shape == (0, INCOME.width)


def test_shards_of_the_validation_split_are_disjoint_and_cover_it():
    parts = [shard_positions(2000, 0, "CA", "val", j, 3) for j in range(3)]
    assert sorted(np.concatenate(parts).tolist()) == list(range(2000))


def test_validation_shards_have_their_own_order():
    val = shard_positions(500, 0, "CA", "val", 0, 4)
    assert not any(np.array_equal(val, shard_positions(500, 0, "CA", split, 0, 4)) for split in ("train", "test"))


def test_a_states_shards_hold_its_whole_validation_split(make_income_frame):
    codes = build_state_codes(INCOME, make_income_frame("AL", 1000), 0, 100, 200, 200)
    whole = StateData(codes)
    shards = [StateData(codes, ClientId("AL", j, 3)) for j in range(3)]
    assert [s.sizes()["val"] for s in shards] == [67, 67, 66]
    positions = [shard_positions(200, 0, "AL", "val", j, 3) for j in range(3)]
    for shard, at in zip(shards, positions):
        assert np.array_equal(shard.val.x, whole.val.x[at])
