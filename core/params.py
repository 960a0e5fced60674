"""Model parameters as both sides hold them: a dict of float32 numpy arrays, and its Flower record.

Parameters travel as plain numpy so that Flower, the strategies and the trainers share one
representation; `core/torch_model.py` is the torch reference of their layout.
"""

from __future__ import annotations

import io
import math
import struct
from functools import lru_cache

import numpy as np
from flwr.app import Array, ArrayRecord
from flwr.common.constant import SType

Params = dict[str, np.ndarray]

PARAM_KEYS = ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")


INIT_STREAM = 91  # seed word of the initial model's draw; no state's FIPS code (1..78), so no client's stream


def init_params(width: int, hidden: int, seed: int) -> Params:
    """torch's default `nn.Linear` initialisation, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for every
    weight and bias, drawn by numpy from (seed, INIT_STREAM).

    Not torch's own draw: its uniform kernel rounds differently on CPUs without AVX2, and
    results must not depend on the CPU. Here every value is (2u - 1) * bound with u from the
    generator's integer stream: exact IEEE operations on any machine."""
    rng = np.random.default_rng([seed, INIT_STREAM])
    shapes = {"fc1.weight": (hidden, width), "fc1.bias": (hidden,), "fc2.weight": (1, hidden), "fc2.bias": (1,)}
    fan_in = {"fc1.weight": width, "fc1.bias": width, "fc2.weight": hidden, "fc2.bias": hidden}
    return {
        key: ((rng.random(shapes[key]) * 2.0 - 1.0) * (1.0 / math.sqrt(fan_in[key]))).astype(np.float32)
        for key in PARAM_KEYS
    }


def copy_params(params: Params) -> Params:
    """Deep float32 copy, so callers never share buffers with a trainer."""
    return {k: np.array(params[k], dtype=np.float32, copy=True) for k in PARAM_KEYS}


def to_record(params: Params, prefix: str = "") -> ArrayRecord:
    """Parameters as an ArrayRecord; `prefix` namespaces several models in one record."""
    return ArrayRecord({f"{prefix}{k}": to_array(v) for k, v in params.items()})


@lru_cache(maxsize=256)
def _npy_header_of(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    """The bytes np.save writes before a C-ordered array's data (its format picks the version)."""
    buffer = io.BytesIO()
    np.save(buffer, np.empty(shape, dtype), allow_pickle=False)
    return buffer.getvalue()[: buffer.tell() - math.prod(shape) * dtype.itemsize]


def to_array(values: np.ndarray) -> Array:
    """`Array(np.ascontiguousarray(values))` with the same bytes, without np.save: its header is
    formatted once per dtype and shape (np.save took 0.1 ms an array, a client's reply has four
    and a server sends thousands a round)."""
    values = np.ascontiguousarray(values)
    if values.dtype.hasobject:
        return Array(values)
    data = _npy_header_of(values.dtype, values.shape) + values.tobytes()
    return Array(dtype=str(values.dtype), shape=tuple(int(n) for n in values.shape), stype=SType.NUMPY, data=data)


def from_record(record: ArrayRecord, prefix: str = "") -> Params:
    """The parameters stored under `prefix` (all of them when prefix is empty)."""
    return {k[len(prefix):]: array_values(v) for k, v in record.items() if k.startswith(prefix)}


NPY_MAGIC = b"\x93NUMPY"


@lru_cache(maxsize=256)
def _npy_header(version: int, header: bytes) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran order, dtype) of an .npy header, read by numpy's own parser."""
    read = np.lib.format.read_array_header_1_0 if version == 1 else np.lib.format.read_array_header_2_0
    return read(io.BytesIO(header))


def array_values(array: Array) -> np.ndarray:
    """`Array.numpy()` without parsing the same .npy header again for every array: a server reads
    thousands of equal-shaped arrays a round (replicates x clients x layers), and numpy parses each
    header with `ast.literal_eval`, which took most of the time. A writable copy, as np.load gives."""
    data = array.data
    if array.stype != SType.NUMPY or data[:6] != NPY_MAGIC or data[6] not in (1, 2, 3):
        return array.numpy()
    size = 2 if data[6] == 1 else 4
    start = 8 + size + struct.unpack("<H" if size == 2 else "<I", data[8:8 + size])[0]
    shape, fortran, dtype = _npy_header(min(int(data[6]), 2), data[8:start])
    if dtype.hasobject:
        return array.numpy()
    values = np.frombuffer(data, dtype=dtype, count=math.prod(shape), offset=start)
    return values.reshape(shape, order="F" if fortran else "C").copy(order="K")
