"""clients.fixed_math: exp and log to float64 accuracy, with IEEE special values, from the same
code on every CPU (tests/test_cpu_independence.py runs them as another CPU would)."""

import math

import numpy as np
import pytest

from clients import fixed_math
from clients.fixed_math import log1p1

ULP = np.finfo(np.float64).eps


def test_exp_is_within_about_one_ulp_of_the_true_value_over_the_whole_range():
    x = np.concatenate([np.random.default_rng(0).uniform(-745, 709, 200_000), np.linspace(-1, 1, 10_001)])
    expected = np.exp(x)
    normal = expected > np.finfo(np.float64).tiny
    assert (np.abs(fixed_math.exp(x) - expected)[normal] / expected[normal]).max() <= 1.1 * ULP


def test_exp_special_values_are_ieee():
    got = fixed_math.exp(np.array([0.0, -0.0, 710.0, -746.0, math.inf, -math.inf, math.nan]))
    assert got[:6].tolist() == [1.0, 1.0, math.inf, 0.0, math.inf, 0.0] and math.isnan(got[6])


def test_log_is_within_a_few_ulp_of_the_true_value_over_the_whole_range():
    x = np.exp(np.random.default_rng(1).uniform(-700, 700, 200_000))
    near_one = 1.0 + np.random.default_rng(2).uniform(-1e-3, 1e-3, 10_000)
    assert np.abs(fixed_math.log(x) - np.log(x)).max() <= 4 * ULP * np.abs(np.log(x)).max()
    assert np.abs(fixed_math.log(near_one) - np.log(near_one)).max() <= 2 * ULP


def test_log_special_values_are_ieee():
    got = fixed_math.log(np.array([1.0, 0.0, math.inf, -1.0, math.nan]))
    assert got[:3].tolist() == [0.0, -math.inf, math.inf] and np.isnan(got[3:]).all()


@pytest.mark.parametrize("x", [1e-30, 1e-12, 3e-8, 0.25, 1.0])
def test_log1p_keeps_full_relative_accuracy_for_tiny_arguments(x):
    assert log1p1(x) == pytest.approx(math.log1p(x), rel=2 * ULP)


def test_scalars_come_back_as_floats_and_arrays_keep_their_shape():
    assert fixed_math.exp(0.0) == 1.0 and isinstance(fixed_math.log(1.0), float)
    assert fixed_math.exp(np.zeros((2, 3))).shape == (2, 3)
