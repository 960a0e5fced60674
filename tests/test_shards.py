"""Sub-state clients (`clients-per-state`): exact, seeded shards of each split, their labels and seeds."""

import numpy as np
import pytest

from clients.data import StateData, build_state_codes
from clients.local import evaluate_local, fault_strikes, local_rng
from clients.shards import ClientId, client_labels, shard_positions
from core.params import init_params
from core.tasks import INCOME
from fl_app.client_app import client_index


def test_shards_partition_a_split_exactly_in_near_equal_parts():
    parts = [shard_positions(203, 0, "CA", "train", j, 4) for j in range(4)]
    assert sorted(np.concatenate(parts).tolist()) == list(range(203))
    assert sorted(len(p) for p in parts) == [50, 51, 51, 51]


def test_shards_are_identical_on_every_call():
    assert np.array_equal(shard_positions(500, 3, "WY", "test", 2, 5), shard_positions(500, 3, "WY", "test", 2, 5))


def test_shards_depend_on_seed_state_and_split():
    base = shard_positions(500, 0, "CA", "train", 0, 4)
    others = [shard_positions(500, 1, "CA", "train", 0, 4), shard_positions(500, 0, "NY", "train", 0, 4),
              shard_positions(500, 0, "CA", "test", 0, 4)]
    assert not any(np.array_equal(base, other) for other in others)


def test_a_shards_splits_are_its_states_records_at_its_positions(make_income_frame):
    codes = build_state_codes(INCOME, make_income_frame("AL", 400), seed=0)
    whole, shard = StateData(codes), StateData(codes, ClientId("AL", 1, 3))
    positions = shard_positions(len(whole.test), 0, "AL", "test", 1, 3)
    assert np.array_equal(shard.test.x, whole.test.x[positions])
    assert np.array_equal(shard.test.groups["race"], whole.test.groups["race"][positions])


def test_the_shards_of_a_state_hold_its_whole_train_and_test_splits(make_income_frame):
    codes = build_state_codes(INCOME, make_income_frame("AL", 400), seed=0)
    shards = [StateData(codes, ClientId("AL", j, 3)) for j in range(3)]
    assert (sum(len(s.train) for s in shards), sum(len(s.test) for s in shards)) == (320, 80)


def test_pooled_counts_of_the_shards_equal_the_states(make_income_frame):
    codes = build_state_codes(INCOME, make_income_frame("AL", 400), seed=0)
    model = init_params(INCOME.width, INCOME.hidden, 5)
    whole = evaluate_local(model, StateData(codes).test, 0).counts
    parts = [evaluate_local(model, StateData(codes, ClientId("AL", j, 4)).test, j).counts for j in range(4)]
    for attribute in whole:
        assert np.array_equal(sum(p[attribute] for p in parts), whole[attribute])


def test_a_shard_without_test_records_is_named(make_income_frame):
    codes = build_state_codes(INCOME, make_income_frame("AL", 10), seed=0)
    with pytest.raises(ValueError, match="client AL-2 has no test records"):
        _ = StateData(codes, ClientId("AL", 2, 3)).test


def test_labels_are_state_codes_for_one_client_per_state_and_numbered_shards_otherwise():
    assert client_labels(("AL", "CA"), 1) == ("AL", "CA")
    assert client_labels(("AL", "CA"), 2) == ("AL-0", "AL-1", "CA-0", "CA-1")


def test_a_whole_state_client_draws_what_it_drew_before_shards():
    assert local_rng(7, ClientId("CA"), 3, 1).random() == np.random.default_rng([7, 6, 3, 1]).random()


def test_each_shard_draws_its_own_randomness():
    draws = {local_rng(0, ClientId("CA", j, 4), 1).random() for j in range(4)}
    assert len(draws) == 4


def test_a_listed_fail_state_fails_in_all_its_shards():
    assert all(fault_strikes(0, ClientId("CA", j, 4), 1, ("CA",), 0.0) for j in range(4))


def test_partition_id_counts_shards_within_states():
    assert client_index({"partition-id": 6}, ("AL", "CA", "WY"), 4) == 6  # CA-2


def test_node_config_state_and_shard_name_the_client():
    assert client_index({"state": "wy", "shard": 1}, ("AL", "CA", "WY"), 4) == 9


def test_node_config_without_a_shard_is_refused_when_states_are_split():
    with pytest.raises(ValueError, match="no shard; clients-per-state is 4"):
        client_index({"state": "CA"}, ("AL", "CA", "WY"), 4)
