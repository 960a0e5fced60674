"""FedAvg arithmetic: example-weighted averaging of parameter dicts."""

import numpy as np
import pytest

from strategies.aggregation import weighted_average


def model(value: float) -> dict[str, np.ndarray]:
    return {"w": np.full((2, 3), value, dtype=np.float32), "b": np.array([value], dtype=np.float32)}


def test_average_is_weighted_by_examples():
    avg = weighted_average([model(1.0), model(4.0)], [300, 100])
    assert avg["w"].tolist() == [[1.75] * 3] * 2
    assert avg["b"].tolist() == [1.75]


def test_average_keeps_keys_shapes_and_dtype():
    avg = weighted_average([model(1.0), model(2.0)], [1, 1])
    assert {k: (v.shape, v.dtype) for k, v in avg.items()} == {
        "w": ((2, 3), np.float32), "b": ((1,), np.float32)
    }


def test_a_single_model_is_returned_unchanged():
    assert weighted_average([model(3.5)], [10])["w"][0, 0] == np.float32(3.5)


def test_zero_weights_are_rejected():
    with pytest.raises(ValueError, match="positive sum"):
        weighted_average([model(1.0), model(2.0)], [0, 0])
