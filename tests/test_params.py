"""Parameters in Flower records: `array_values` equals `Array.numpy()` (numpy's np.load) in dtype,
shape, memory order and every value, and is writable, whatever array it is given; `to_array`
writes the bytes Flower's own `Array(ndarray)` (np.save) writes."""

import numpy as np
import pytest
from flwr.app import Array

from core.params import array_values, to_array

RNG = np.random.default_rng(0)
ARRAYS = {
    "float32 matrix": RNG.random((32, 54)).astype(np.float32),
    "fortran order": np.asfortranarray(RNG.random((3, 4))),
    "0-d": np.array(3.5),
    "big-endian ints": np.arange(5, dtype=">i4"),
    "empty": RNG.random((0, 3)),
    "bools": np.array([True, False]),
    "strings": np.array(["ab", "c"]),
}


@pytest.mark.parametrize("name", ARRAYS)
def test_array_values_equal_flowers_own_decoding(name):
    record = Array(ARRAYS[name])
    got, want = array_values(record), record.numpy()
    assert (got.dtype, got.shape, got.flags.f_contiguous) == (want.dtype, want.shape, want.flags.f_contiguous)
    assert np.array_equal(got, want)
    got[...] = 0  # writable, and a copy: the record's bytes are unchanged
    assert np.array_equal(record.numpy(), ARRAYS[name])


@pytest.mark.parametrize("name", ARRAYS)
def test_to_array_writes_the_bytes_of_flowers_own_encoding(name):
    got, want = to_array(ARRAYS[name]), Array(np.ascontiguousarray(ARRAYS[name]))
    assert (got.dtype, got.shape, got.stype, got.data) == (want.dtype, want.shape, want.stype, want.data)
