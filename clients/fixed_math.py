"""exp and log whose results are the same bytes on every x86-64 CPU.

numpy picks its exp/log/log1p loops by CPU (AVX-512 machines run other code than AVX2 ones,
with other last bits), and glibc's libm picks FMA variants of exp and log by CPU too. These
use only +, -, *, / (each correctly rounded by IEEE 754, no fused multiply-add: see
`clients.compiled`), floor, frexp and scaling by exact powers of two, in a fixed order, so their results
depend on the input alone. Accuracy: a few ulp of float64.
"""

from __future__ import annotations

import math

import numpy as np

from clients.compiled import kernel

# Cody-Waite split of ln 2: n * _LN2_HI is exact for |n| < 2^20.
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_INV_LN2 = 1.44269504088896338700e00
_SQRT_HALF = 0.70710678118654752440
_EXP_MAX = 709.782712893384  # above: overflow to inf
_EXP_MIN = -745.1332191019412  # below: underflow to 0
# 1/k! for k = 13 down to 0: e**r = sum r^k / k!, truncated below 4e-18 for |r| <= ln2 / 2.
_EXP_COEF = np.array([1.0 / math.factorial(k) for k in range(13, -1, -1)])
# 2**k for k = -1074 .. 1023, exact: scaling by a table entry rounds once, as ldexp does, and
# costs a multiply instead of a libm call.
_POW2 = np.array([math.ldexp(1.0, k) for k in range(-1074, 1024)])
# 1/(2k+1) for k = 11 down to 0: log(m) = 2 s sum s^2k / (2k+1), s = (m-1)/(m+1), |s| <= 0.172.
_LOG_COEF = np.array([1.0 / (2 * k + 1) for k in range(11, -1, -1)])


@kernel
def exp1(x):
    """e**x of a float64: x = n ln2 + r with |r| <= ln2 / 2, e**r by its Taylor polynomial, times 2**n."""
    if x != x:
        return x
    if x > _EXP_MAX:
        return math.inf
    if x < _EXP_MIN:
        return 0.0
    n = math.floor(x * _INV_LN2 + 0.5)
    r = (x - n * _LN2_HI) - n * _LN2_LO
    p = 0.0
    for c in _EXP_COEF:
        p = p * r + c
    k = int(n)
    if k > 1023:  # x within half a step of the overflow threshold
        p, k = p * 2.0, k - 1
    elif k < -1074:
        p, k = p * 0.5, k + 1
    return p * _POW2[k + 1074]


@kernel
def log1(x):
    """Natural log of a float64: x = m 2**e with m in [sqrt(1/2), sqrt(2)), log m by the
    series of 2 atanh((m-1)/(m+1)), plus e ln2. nan below 0, -inf at 0, inf at inf."""
    if x != x or x < 0.0:
        return math.nan
    if x == 0.0:
        return -math.inf
    if x == math.inf:
        return x
    m, e = math.frexp(x)
    if m < _SQRT_HALF:
        m, e = m * 2.0, e - 1
    s = (m - 1.0) / (m + 1.0)
    s2 = s * s
    p = 0.0
    for c in _LOG_COEF:
        p = p * s2 + c
    return e * _LN2_HI + (2.0 * s * p + e * _LN2_LO)


@kernel
def log1p1(x):
    """log(1 + x) of a float64 x > -1, accurate for tiny x: log(u) * x / (u - 1) with u = 1 + x
    corrects the rounding of u (Goldberg's method)."""
    u = 1.0 + x
    if u == 1.0:
        return x
    if u == math.inf:
        return u
    return log1(u) * (x / (u - 1.0))


@kernel
def _exp_all(x, out):
    for i in range(x.shape[0]):
        out[i] = exp1(x[i])


@kernel
def _log_all(x, out):
    for i in range(x.shape[0]):
        out[i] = log1(x[i])


def _elementwise(compiled, x):
    values = np.asarray(x, dtype=np.float64)
    flat = np.ascontiguousarray(values).reshape(-1)
    out = np.empty_like(flat)
    compiled(flat, out)
    return out.reshape(values.shape) if values.ndim else float(out[0])


def exp(x: np.ndarray | float) -> np.ndarray | float:
    """e**x elementwise, float64, the same bytes on every CPU (a float for a scalar)."""
    return _elementwise(_exp_all, x)


def log(x: np.ndarray | float) -> np.ndarray | float:
    """Natural log elementwise, float64, the same bytes on every CPU (a float for a scalar)."""
    return _elementwise(_log_all, x)
