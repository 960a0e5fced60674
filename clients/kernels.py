"""Every client computation as compiled (numba) kernels on the data's sparse structure.

An encoded record has at most one nonzero per feature (one-hot blocks and scaled numbers),
so a record is F codes, each naming one input column and its value: the first layer of a
step is F row lookups in W1^T instead of a (batch x width) matmul, and its gradient F
scatters. Per 32-row step that is about 10k multiply-adds instead of 100k, and with no
per-call numpy overhead a step costs a few microseconds (benchmarks/local_step.py).

Standardized inputs x_std = (x - shift) / scale stay sparse: W1 x_std = W1 (x / scale) -
W1 (shift / scale), so the scale folds into the code values and the shift adds one dense
bias term per step, and the W1 gradient is the sparse part minus the rank-1 term
(sum of dz) (shift / scale)^T. Data with no shift skips both dense terms.

The kernels keep W1 transposed (width x hidden) so that a code's row is contiguous.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from numba import uint32, uint64

from clients.compiled import kernel
from clients.fixed_math import exp1, log1p1
from core.counts import confusion_counts, population_metrics
from core.params import PARAM_KEYS, Params

FD_DELTA = 1e-3  # finite-difference step of Per-FedAvg's Hessian-vector product (as tests/dense_perfedavg.py)
VARIANTS = ("first-order", "hessian-free")
FAIR_METRICS = ("sp", "eo", "eodds")


@dataclass(frozen=True)
class SparseSplit:
    """A split as the kernels read it: per record and feature, one code naming a (column, value)."""

    codes: np.ndarray  # (n, F) int32: per record and feature, an index into col/val
    y: np.ndarray  # (n,) float32 0/1
    col: np.ndarray  # (ncodes,) int32: input column of that code's single nonzero
    val: np.ndarray  # (ncodes,) float32: its value (0.0 for a code that encodes as all zeros)
    width: int
    shift: np.ndarray  # (width,) float32; the model sees (x - shift) / scale
    scale: np.ndarray  # (width,) float32

    def __post_init__(self) -> None:
        # The kernels index without bounds checks, so every index is checked here, once.
        n, ncodes = len(self.y), len(self.col)
        expected = {"codes": (np.int32, 2), "y": (np.float32, 1), "col": (np.int32, 1), "val": (np.float32, 1),
                    "shift": (np.float32, 1), "scale": (np.float32, 1)}
        for name, (dtype, ndim) in expected.items():
            array = getattr(self, name)
            if not isinstance(array, np.ndarray) or array.dtype != dtype or array.ndim != ndim:
                raise ValueError(f"SparseSplit.{name} must be a {ndim}-D {np.dtype(dtype).name} array")
            if not array.flags.c_contiguous:
                raise ValueError(f"SparseSplit.{name} must be C-contiguous")
        if self.codes.shape[0] != n or self.val.shape != (ncodes,):
            raise ValueError(f"SparseSplit: codes has {self.codes.shape[0]} rows for {n} labels, "
                             f"val {len(self.val)} entries for {ncodes} codes")
        if self.shift.shape != (self.width,) or self.scale.shape != (self.width,):
            raise ValueError(f"SparseSplit: shift and scale must have shape ({self.width},) (the input width)")
        if self.codes.size and (self.codes.min() < 0 or self.codes.max() >= ncodes):
            raise ValueError(f"SparseSplit.codes must lie in [0, {ncodes}) (the number of codes)")
        if ncodes and (self.col.min() < 0 or self.col.max() >= self.width):
            raise ValueError(f"SparseSplit.col must lie in [0, {self.width}) (the input width)")

    def __len__(self) -> int:
        return len(self.y)

    @cached_property
    def scaled_val(self) -> np.ndarray:
        """Each code's value as the model sees it before the shift: val / scale of its column."""
        return (self.val / self.scale[self.col]).astype(np.float32)

    @cached_property
    def offset(self) -> np.ndarray:
        """shift / scale: what standardization subtracts from every input."""
        return (self.shift / self.scale).astype(np.float32)

    @cached_property
    def shifted(self) -> bool:
        """Whether the dense shift terms are needed at all (a scale alone stays sparse)."""
        return bool(np.any(self.shift != 0))

    def dense(self) -> np.ndarray:
        """The float32 input matrix the model sees, (x - shift) / scale (tests and references)."""
        x = np.zeros((len(self.y), self.width), np.float32)
        x[np.arange(len(self.y))[:, None], self.col[self.codes]] = self.val[self.codes]
        return ((x - self.shift) / self.scale).astype(np.float32)


def sparse_from_tables(
    tables: Sequence[np.ndarray],
    rows: Sequence[np.ndarray],
    y: np.ndarray,
    shift: np.ndarray | None = None,
    scale: np.ndarray | None = None,
) -> SparseSplit:
    """The sparse form of a compact split (`StateCodes.tables`, `CompactSplit.rows`), never densified.

    Feature f's table rows become codes offset by the tables before it; each table row may have
    at most one nonzero. shift/scale default to none (zeros and ones).
    """
    if len(tables) != len(rows):
        raise ValueError(f"{len(tables)} tables but {len(rows)} row-index arrays; need one per feature")
    y = np.ascontiguousarray(y, dtype=np.float32)
    cols, vals, codes = [], [], np.empty((len(y), len(tables)), np.int32)
    column, first_code = 0, 0
    for f, (table, index) in enumerate(zip(tables, rows)):
        table, index = np.asarray(table), np.asarray(index)
        if table.ndim != 2:
            raise ValueError(f"feature {f}: table must be 2-D (distinct rows x feature width), got {table.shape}")
        nonzeros = np.count_nonzero(table, axis=1)
        if (nonzeros > 1).any():
            bad = int(np.flatnonzero(nonzeros > 1)[0])
            raise ValueError(f"feature {f}: table row {bad} has {nonzeros[bad]} nonzeros; the sparse form allows one")
        if len(index) != len(y):
            raise ValueError(f"feature {f}: {len(index)} row indices for {len(y)} labels")
        if len(index) and (index.min() < 0 or index.max() >= len(table)):
            raise ValueError(f"feature {f}: row indices must lie in [0, {len(table)}) (its table's rows)")
        position = np.argmax(table != 0, axis=1)  # 0 for an all-zero row, whose value is 0
        cols.append(column + position)
        vals.append(table[np.arange(len(table)), position])
        codes[:, f] = first_code + index.astype(np.int32)
        column += table.shape[1]
        first_code += len(table)
    width = column
    shift = np.zeros(width, np.float32) if shift is None else np.asarray(shift, dtype=np.float32)
    scale = np.ones(width, np.float32) if scale is None else np.asarray(scale, dtype=np.float32)
    for name, array in (("shift", shift), ("scale", scale)):
        if array.shape != (width,):
            raise ValueError(f"{name} must have shape ({width},) (the input width), got {array.shape}")
        if not np.isfinite(array).all():
            raise ValueError(f"{name} must be finite")
    if (scale <= 0).any():
        raise ValueError("scale must be positive")
    return SparseSplit(
        codes=codes,
        y=y,
        col=np.concatenate(cols).astype(np.int32) if cols else np.empty(0, np.int32),
        val=np.concatenate(vals).astype(np.float32) if vals else np.empty(0, np.float32),
        width=width,
        shift=np.ascontiguousarray(shift),
        scale=np.ascontiguousarray(scale),
    )


def sparse_from_dense(x: np.ndarray, y: np.ndarray) -> SparseSplit:
    """A dense input matrix in the kernels' form: each record's nonzeros in column order, padded
    with one shared all-zero code (a zero input moves nothing). Lets rows standardized with
    different shifts and scales (centralized's pool of clients) train in the same kernels."""
    x = np.asarray(x, dtype=np.float32)
    n, width = x.shape
    rows, cols = np.nonzero(x)
    per_row = np.bincount(rows, minlength=n)
    features = max(int(per_row.max(initial=0)), 1)
    first = np.concatenate([[0], np.cumsum(per_row)[:-1]]).astype(np.int64)
    codes = np.zeros((n, features), np.int32)
    codes[rows, np.arange(len(rows)) - first[rows]] = np.arange(1, len(rows) + 1, dtype=np.int32)
    return SparseSplit(
        codes=codes,
        y=np.ascontiguousarray(y, dtype=np.float32),
        col=np.concatenate([[0], cols]).astype(np.int32),
        val=np.concatenate([[0.0], x[rows, cols]]).astype(np.float32),
        width=width,
        shift=np.zeros(width, np.float32),
        scale=np.ones(width, np.float32),
    )


# --- compiled cores ---------------------------------------------------------------------------
# Arrays are float32 (codes int32, batch orders int64); scalars are cast to float32 inside so
# the inner loops stay single precision. A gradient is held implicitly, as the batch's rows
# (perm[start:stop]), pre-activations z, output gradients g and hidden gradients dz, so it can
# be applied to any parameter set (Per-FedAvg applies gradients taken at other points).
# A compiled call taking arrays costs more than a record's arithmetic (each array goes over field
# by field, with reference counting), so loops over records live inside one function: a call per
# record doubled the forward pass, even with inline="always". Rows are indexed explicitly
# (z[r, k], never a view z[r]) for the same reason. Indices
# read from data are cast to unsigned, which drops numba's negative-index handling from the inner
# loops (a quarter of the forward pass); SparseSplit checks every code and column is in range.

# IEEE arithmetic in source order (clients.compiled), so results do not depend on the CPU:
# loops over hidden units are elementwise and vectorize at any width; the one reduction over
# them (the output layer) keeps _LANES explicit partial sums, combined in a fixed tree. NaN
# and inf propagate as in numpy (a diverged update must reach the server's check as NaN).
_LANES = 8
_CHUNK = 64  # records per pass when predicting a whole split


@kernel
def _effective_bias(W1T, b1, u, shifted, out):
    """b1 - W1 (shift/scale): the first layer's bias for standardized inputs."""
    h = b1.shape[0]
    for k in range(h):
        out[k] = b1[k]
    if shifted:
        for j in range(W1T.shape[0]):
            uj = u[j]
            for k in range(h):
                out[k] -= uj * W1T[j, k]


@kernel
def _forward_rows(W1T, bias, w2, b2, codes, col, sval, order, start, stop, z, logit):
    """Pre-activations z[r] and logits logit[r] of the records order[start + r], r < stop - start:
    bias plus one W1^T row per feature, two features per pass over z[r] (about 15% faster)."""
    h, features = bias.shape[0], codes.shape[1]
    for r in range(stop - start):
        i = uint64(order[start + r])
        for k in range(h):
            z[r, k] = bias[k]
        for f in range(0, features - 1, 2):
            c1, c2 = uint32(codes[i, f]), uint32(codes[i, f + 1])
            j1, v1, j2, v2 = uint32(col[c1]), sval[c1], uint32(col[c2]), sval[c2]
            for k in range(h):
                z[r, k] += v1 * W1T[j1, k] + v2 * W1T[j2, k]
        if features % 2:
            c = uint32(codes[i, features - 1])
            j, v = uint32(col[c]), sval[c]
            for k in range(h):
                z[r, k] += v * W1T[j, k]
        logit[r] = _output(z, r, w2) + b2[0]


@kernel
def _output(z, r, w2):
    """sum_k relu(z[r, k]) w2[k] as _LANES running sums (lane j takes k = j mod _LANES below the
    last full group, lane 0 the rest), added pairwise: the same order on every CPU."""
    h = w2.shape[0]
    full = h - h % _LANES
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = np.float32(0.0)
    zero = np.float32(0.0)
    for k in range(0, full, _LANES):
        s0 += max(z[r, k], zero) * w2[k]
        s1 += max(z[r, k + 1], zero) * w2[k + 1]
        s2 += max(z[r, k + 2], zero) * w2[k + 2]
        s3 += max(z[r, k + 3], zero) * w2[k + 3]
        s4 += max(z[r, k + 4], zero) * w2[k + 4]
        s5 += max(z[r, k + 5], zero) * w2[k + 5]
        s6 += max(z[r, k + 6], zero) * w2[k + 6]
        s7 += max(z[r, k + 7], zero) * w2[k + 7]
    for k in range(full, h):
        s0 += max(z[r, k], zero) * w2[k]
    return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))


@kernel
def _bce(logit, y, with_loss):
    """Sigmoid and (if asked: log1p is much of the per-record work) BCE-with-logits of one logit,
    through exp(-|logit|) so that nothing overflows; exp and log1p from clients.fixed_math, in
    float64 and rounded once to float32, so that no CPU's libm decides a bit."""
    e64 = exp1(-abs(np.float64(logit)))
    e = np.float32(e64)
    p = np.float32(1.0) / (np.float32(1.0) + e) if logit >= 0 else e / (np.float32(1.0) + e)
    if not with_loss:
        return np.float32(0.0), p
    return max(logit, np.float32(0.0)) + np.float32(log1p1(e64)) - y * logit, p


@kernel
def _backprop(W1T, b1, w2, b2, codes, y, col, sval, u, shifted, perm, start, stop, bias, z, g, dz, with_loss):
    """Gradient of the mean BCE on rows perm[start:stop] into (z, g, dz); returns the batch's summed
    loss (0 unless with_loss). g holds the logits until each is turned into its gradient."""
    h = b1.shape[0]
    inv = np.float32(1.0) / np.float32(stop - start)
    _effective_bias(W1T, b1, u, shifted, bias)
    _forward_rows(W1T, bias, w2, b2, codes, col, sval, perm, start, stop, z, g)
    total = 0.0
    for r in range(stop - start):
        yi = y[perm[start + r]]
        loss, p = _bce(g[r], yi, with_loss)
        total += loss
        gr = (p - yi) * inv
        g[r] = gr
        for k in range(h):
            dz[r, k] = gr * w2[k] if z[r, k] > 0 else np.float32(0.0)
    return total


@kernel
def _descend(W1T, b1, w2, b2, coef, codes, col, sval, u, shifted, perm, start, stop, z, g, dz, gb1, gw2):
    """params -= coef * the gradient held in (z, g, dz) for rows perm[start:stop]; gb1, gw2 are scratch."""
    h = b1.shape[0]
    c = np.float32(coef)
    gb2 = np.float32(0.0)
    for k in range(h):
        gb1[k] = 0.0
        gw2[k] = 0.0
    for r in range(stop - start):
        gr = g[r]
        gb2 += gr
        for k in range(h):
            gw2[k] += gr * max(z[r, k], np.float32(0.0))
            gb1[k] += dz[r, k]
        i = uint64(perm[start + r])
        for f in range(codes.shape[1]):
            cc = uint32(codes[i, f])
            j, s = uint32(col[cc]), c * sval[cc]
            for k in range(h):
                W1T[j, k] -= s * dz[r, k]
    b2[0] -= c * gb2
    for k in range(h):
        w2[k] -= c * gw2[k]
        b1[k] -= c * gb1[k]
    if shifted:  # the rank-1 part: d/dW1 of -W1 (shift/scale) is -(sum of dz) (shift/scale)^T
        for j in range(W1T.shape[0]):
            s = c * u[j]
            for k in range(h):
                W1T[j, k] += s * gb1[k]


@kernel
def _pull(w, anchor, c):
    """w -= c * (w - anchor), elementwise: the proximal term's step."""
    flat, ref = w.reshape(-1), anchor.reshape(-1)
    for k in range(flat.shape[0]):
        flat[k] -= c * (flat[k] - ref[k])


@kernel
def _sgd_epoch(W1T, b1, w2, b2, codes, y, col, sval, u, shifted, perm, batch_size, max_steps, lr, mu,
               A1T, Ab1, Aw2, Ab2, with_loss):
    """Plain SGD over consecutive batches of perm (at most max_steps of them, < 0: all); returns the
    summed pre-update loss (if with_loss). mu > 0 adds the proximal gradient mu * (params - anchor)
    to every step."""
    n, h = perm.shape[0], b1.shape[0]
    rows = min(batch_size, n)
    z, dz = np.empty((rows, h), np.float32), np.empty((rows, h), np.float32)
    g, bias = np.empty(rows, np.float32), np.empty(h, np.float32)
    gb1, gw2 = np.empty(h, np.float32), np.empty(h, np.float32)
    pull = np.float32(lr * mu)
    total, steps = 0.0, 0
    for start in range(0, n, batch_size):
        if steps == max_steps:
            break
        stop = min(start + batch_size, n)
        total += _backprop(W1T, b1, w2, b2, codes, y, col, sval, u, shifted, perm, start, stop, bias, z, g, dz,
                           with_loss)
        if mu > 0:
            _pull(W1T, A1T, pull)
            _pull(b1, Ab1, pull)
            _pull(w2, Aw2, pull)
            _pull(b2, Ab2, pull)
        _descend(W1T, b1, w2, b2, lr, codes, col, sval, u, shifted, perm, start, stop, z, g, dz, gb1, gw2)
        steps += 1
    return total


@kernel
def _copy_flat(dst, src):
    """dst[...] = src, as one flat loop: numba's slice assignment took 3-5x longer."""
    d, s = dst.reshape(-1), src.reshape(-1)
    for k in range(d.shape[0]):
        d[k] = s[k]


@kernel
def _copy_into(T1T, tb1, tw2, tb2, W1T, b1, w2, b2):
    _copy_flat(T1T, W1T)
    _copy_flat(tb1, b1)
    _copy_flat(tw2, w2)
    _copy_flat(tb2, b2)


@kernel
def _meta_epoch(W1T, b1, w2, b2, T1T, tb1, tw2, tb2, codes, y, col, sval, u, shifted, perm, batch_size,
                alpha, beta, hessian_free, delta, with_loss):
    """One epoch of Per-FedAvg meta-steps, one per batch of perm, step i taking batches i, i+1
    (and i+2) cyclically, as `tests/dense_perfedavg.py`'s `meta_batches`; T* is scratch for the
    temporary models. Returns (summed loss on D' at the inner step, records of D').

    A meta-step takes gradients at up to four points, each into its own slot: 0 at w on D,
    1 at w - alpha g0 on D' and (hessian-free) 2 and 3 at w + delta g1 and w - delta g1 on D''.
    Then w -= beta (g1 - alpha (g2 - g3) / (2 delta)). One call site per kernel keeps the compile short."""
    n, h = perm.shape[0], b1.shape[0]
    rows = min(batch_size, n)
    points = 4 if hessian_free else 2
    batches = (n + batch_size - 1) // batch_size
    z, dz = np.empty((4, rows, h), np.float32), np.empty((4, rows, h), np.float32)
    g = np.empty((4, rows), np.float32)
    bias, gb1, gw2 = np.empty(h, np.float32), np.empty(h, np.float32), np.empty(h, np.float32)
    batch_of = np.array([0, 1, 2, 2])  # which of D, D', D'' each slot's gradient is taken on
    source = np.array([0, 0, 1, 1])  # the slot whose gradient moves w to that point, by step[slot]
    step = np.array([0.0, alpha, -delta, delta])
    outer = np.array([0.0, beta, -beta * alpha / (2.0 * delta), beta * alpha / (2.0 * delta)])
    total, seen = 0.0, 0
    for first in range(batches):
        for slot in range(points):
            start = ((first + batch_of[slot]) % batches) * batch_size
            stop = min(start + batch_size, n)
            if slot > 0:  # the point: a copy of w moved by another slot's gradient
                _copy_into(T1T, tb1, tw2, tb2, W1T, b1, w2, b2)
                s = source[slot]
                from_start = ((first + batch_of[s]) % batches) * batch_size
                _descend(T1T, tb1, tw2, tb2, step[slot], codes, col, sval, u, shifted, perm, from_start,
                         min(from_start + batch_size, n), z[s], g[s], dz[s], gb1, gw2)
            P1T, pb1, pw2, pb2 = (W1T, b1, w2, b2) if slot == 0 else (T1T, tb1, tw2, tb2)
            loss = _backprop(P1T, pb1, pw2, pb2, codes, y, col, sval, u, shifted, perm, start, stop, bias,
                             z[slot], g[slot], dz[slot], with_loss and slot == 1)
            if slot == 1:
                total += loss
                seen += stop - start
        for slot in range(1, points):
            start = ((first + batch_of[slot]) % batches) * batch_size
            _descend(W1T, b1, w2, b2, outer[slot], codes, col, sval, u, shifted, perm, start,
                     min(start + batch_size, n), z[slot], g[slot], dz[slot], gb1, gw2)
    return total, seen


@kernel
def _logits(W1T, b1, w2, b2, codes, col, sval, u, shifted):
    n, h = codes.shape[0], b1.shape[0]
    out, order = np.empty(n, np.float32), np.arange(n)
    z, bias = np.empty((_CHUNK, h), np.float32), np.empty(h, np.float32)
    _effective_bias(W1T, b1, u, shifted, bias)
    for start in range(0, n, _CHUNK):
        stop = min(start + _CHUNK, n)
        _forward_rows(W1T, bias, w2, b2, codes, col, sval, order, start, stop, z, out[start:stop])
    return out


@kernel
def _loss_sum(logits, y):
    total = 0.0
    for i in range(logits.shape[0]):
        total += _bce(logits[i], y[i], True)[0]
    return total


@kernel
def _group_counts(logits, y, group, out):
    """out[4 g + cell] += 1 per record of group g, cell in core.counts' order (tp, fp, tn, fn) of the
    prediction logit >= 0 against the label y >= 0.5; False (out unfinished) at a group not 0 or 1."""
    for i in range(logits.shape[0]):
        g = np.int64(group[i])
        if g != 0 and g != 1:
            return False
        if y[i] >= 0.5:
            cell = 0 if logits[i] >= 0 else 3
        else:
            cell = 1 if logits[i] >= 0 else 2
        out[4 * g + cell] += 1
    return True


# --- wrappers: params dicts in and out ----------------------------------------------------------


def _unpack(params: Params, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fresh float32 copies (W1^T, b1, w2, b2), so the caller's params are never written."""
    got = np.shape(params["fc1.weight"])[1]
    if got != width:
        raise ValueError(f"params have input width {got} but the data has width {width}")
    return (
        np.array(np.asarray(params["fc1.weight"], np.float32).T, order="C"),
        np.array(params["fc1.bias"], np.float32),
        np.array(np.asarray(params["fc2.weight"], np.float32)[0]),
        np.array(params["fc2.bias"], np.float32).reshape(1),
    )


def _pack(W1T: np.ndarray, b1: np.ndarray, w2: np.ndarray, b2: np.ndarray) -> Params:
    return {
        "fc1.weight": np.ascontiguousarray(W1T.T),
        "fc1.bias": b1,
        "fc2.weight": w2[None, :].copy(),
        "fc2.bias": b2,
    }


def _copy(params: Params) -> Params:
    return {k: np.array(params[k], dtype=np.float32, copy=True) for k in PARAM_KEYS}


def _data_args(data: SparseSplit) -> tuple:
    return data.codes, data.y, data.col, data.scaled_val, data.offset, data.shifted


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch-size must be at least 1, got {batch_size}")


def train_sgd(
    params: Params, data: SparseSplit, *, lr: float, epochs: int, batch_size: int, rng: np.random.Generator,
    prox_mu: float = 0.0, anchor: Params | None = None,
) -> tuple[Params, float]:
    """Minibatch SGD on mean BCE-with-logits, as the dense reference `tests/dense_training.py` (same batch order);
    returns new params and the last epoch's mean pre-update loss (nan and a copy on no data or
    no epochs). `prox_mu > 0` adds Ditto's prox_mu/2 * ||params - anchor||^2 to the objective."""
    _check_batch_size(batch_size)
    if prox_mu > 0 and anchor is None:
        raise ValueError("prox_mu > 0 needs the anchor params")
    n = len(data)
    if n == 0 or epochs <= 0:
        return _copy(params), float("nan")
    weights = _unpack(params, data.width)
    anchors = _unpack(anchor, data.width) if prox_mu > 0 else weights
    total = 0.0
    for epoch in range(1, epochs + 1):
        total = _sgd_epoch(*weights, *_data_args(data), rng.permutation(n), batch_size, -1, lr, prox_mu, *anchors,
                           epoch == epochs)
    return _pack(*weights), total / n


def meta_train(
    params: Params, data: SparseSplit, *, alpha: float, beta: float, epochs: int, batch_size: int,
    rng: np.random.Generator, variant: str = "first-order",
) -> tuple[Params, float]:
    """Per-FedAvg local meta-training, as the dense reference in `tests/dense_perfedavg.py`: per meta-step an
    inner step of size alpha on batch D, the gradient at that point on D' (and, hessian-free, a
    finite-difference Hessian-vector product on D''), an outer step of size beta. Returns the
    meta-model and the last epoch's mean loss on D' after the inner steps."""
    _check_batch_size(batch_size)
    if variant not in VARIANTS:
        raise ValueError(f"unknown maml-variant '{variant}'; valid: {', '.join(VARIANTS)}")
    weights = _unpack(params, data.width)
    scratch = tuple(np.empty_like(w) for w in weights)
    total, seen = 0.0, 0
    for epoch in range(1, epochs + 1):
        total, seen = _meta_epoch(*weights, *scratch, *_data_args(data), rng.permutation(len(data)), batch_size,
                                  alpha, beta, variant == "hessian-free", FD_DELTA, epoch == epochs)
    return _pack(*weights), (total / seen if seen else float("nan"))


def adapt(
    params: Params, data: SparseSplit, *, steps: int, lr: float, batch_size: int, rng: np.random.Generator
) -> Params:
    """Personalize a received model: `steps` SGD steps, as the dense reference in `tests/dense_perfedavg.py` (which
    draws every epoch the steps reach into, whole)."""
    _check_batch_size(batch_size)
    n = len(data)
    if steps <= 0 or n == 0:
        return _copy(params)
    weights = _unpack(params, data.width)
    epochs = -(-steps * batch_size // n)
    per_epoch = -(-n // batch_size)
    for epoch in range(epochs):
        remaining = steps - epoch * per_epoch
        perm = rng.permutation(n)
        if remaining > 0:
            _sgd_epoch(*weights, *_data_args(data), perm, batch_size, remaining, lr, 0.0, *weights, False)
    return _pack(*weights)


def predict_logits(params: Params, data: SparseSplit) -> np.ndarray:
    """The model's logit for every record, float32."""
    codes, _, col, sval, u, shifted = _data_args(data)
    return _logits(*_unpack(params, data.width), codes, col, sval, u, shifted)


def _mean_bce(logits: np.ndarray, y: np.ndarray) -> float:
    return _loss_sum(logits, y) / len(y) if len(y) else float("nan")


def mean_loss(params: Params, data: SparseSplit) -> float:
    """Mean binary cross-entropy on the split; nan on an empty one."""
    return _mean_bce(predict_logits(params, data), data.y)


def group_counts(logits: np.ndarray, y: np.ndarray, group: np.ndarray) -> np.ndarray:
    """`core.counts.confusion_counts(y >= 0.5, logits >= 0, group)` in one compiled pass: its three
    0/1 checks (`np.isin`) cost more than the forward pass of an evaluation."""
    group = np.asarray(group)
    if len(group) != len(logits) or len(y) != len(logits):
        raise ValueError(f"{len(logits)} logits, {len(y)} labels and {len(group)} group entries; need one each")
    if group.dtype == np.bool_:
        group = group.view(np.int8)
    elif group.dtype.kind not in "iu":
        return confusion_counts(y >= 0.5, logits >= 0, group)
    out = np.zeros(8, np.int64)
    if not _group_counts(logits, y, group, out):
        raise ValueError("group must contain only 0/1 (or False/True)")
    return out.reshape(2, 4)


def evaluate(params: Params, data: SparseSplit, groups: dict[str, np.ndarray]) -> tuple[float, dict[str, np.ndarray]]:
    """Mean loss and, per attribute, (2, 4) int64 counts [tp, fp, tn, fn] of group 0 and group 1,
    predicting 1 where the logit is >= 0 (p >= 0.5)."""
    logits = predict_logits(params, data)
    return _mean_bce(logits, data.y), {a: group_counts(logits, data.y, g) for a, g in groups.items()}


def score_models(
    models: Sequence[Params], data: SparseSplit, group: np.ndarray, fair_metric: str
) -> tuple[np.ndarray, np.ndarray]:
    """Each candidate model's mean loss and fairness gap on the split (IFCA's cluster scores),
    as `clients.local.score_models`; a gap is NaN where a group has no records to define it."""
    if fair_metric not in FAIR_METRICS:
        raise ValueError(f"unknown fair-metric '{fair_metric}'; valid: {', '.join(FAIR_METRICS)}")
    losses, gaps = [], []
    for params in models:
        loss, counts = evaluate(params, data, {"group": group})
        losses.append(loss)
        gaps.append(population_metrics(counts["group"])[f"{fair_metric}_gap"])
    return np.asarray(losses), np.asarray(gaps)


def update_vector(before: Params, after: Params) -> np.ndarray:
    """after - before, flattened to float64 in PARAM_KEYS order (what FL+HC clusters)."""
    return np.concatenate(
        [(np.asarray(after[k], np.float64) - np.asarray(before[k], np.float64)).ravel() for k in PARAM_KEYS]
    )
