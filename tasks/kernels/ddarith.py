"""Double-double arithmetic on numpy arrays: about 32 significant digits from float64 operations.

A value is a pair (hi, lo) with hi = fl(hi + lo). The error-free transformations are Knuth's
TwoSum, Dekker's TwoProduct (Dekker 1971; Ogita, Rump & Oishi 2005) and Rump's ExtractScalar
(Rump, Ogita & Oishi 2008). The block kernels write into buffers the caller owns (out, scratch):
on large blocks, fresh temporaries (page faults, numpy's elision checks) cost more than the
arithmetic.
"""

from __future__ import annotations

import math

import numpy as np

_SPLITTER = 134217729.0  # 2^27 + 1: splits a float64 into two 26-bit halves

DD = tuple[np.ndarray, np.ndarray]


def two_sum(a: np.ndarray, b: np.ndarray) -> DD:
    """s + e = a + b exactly, with s = fl(a + b)."""
    s = np.add(a, b)
    bb = s - a
    e = s - bb
    np.subtract(a, e, out=e)  # a - (s - bb)
    np.subtract(b, bb, out=bb)  # b - bb
    e += bb
    return s, e


def split(a: np.ndarray, out: DD | None = None) -> DD:
    """a = hi + lo exactly, each half with at most 26 significant bits."""
    hi, lo = out if out is not None else (np.empty_like(a), np.empty_like(a))
    np.multiply(a, _SPLITTER, out=hi)
    np.subtract(hi, a, out=lo)
    hi -= lo  # t - (t - a)
    np.subtract(a, hi, out=lo)
    return hi, lo


def product_error(p: np.ndarray, a: DD, b: DD, out: np.ndarray | None = None,
                  scratch: np.ndarray | None = None) -> np.ndarray:
    """e = a b - p exactly, for p = fl(a b) and Dekker halves a = a1 + a2, b = b1 + b2 (split;
    they broadcast): every partial product of 26-bit halves is exact. Splitting once and reusing
    the halves saves most of TwoProduct's work when one factor meets many others."""
    (a1, a2), (b1, b2) = a, b
    e = np.multiply(a1, b1, out=out)
    e -= p
    t = np.multiply(a1, b2, out=scratch)
    e += t
    e += np.multiply(a2, b1, out=t)
    e += np.multiply(a2, b2, out=t)
    return e


def renormalize(hi: np.ndarray, lo: np.ndarray) -> DD:
    """(hi, lo) with hi = fl(hi + lo)."""
    s = hi + lo
    return s, lo - (s - hi)


def add(a: DD, b: DD) -> DD:
    """a + b in double-double, elementwise (the accurate addition: both parts by TwoSum)."""
    s, e = two_sum(a[0], b[0])
    t, f = two_sum(a[1], b[1])
    s, e = renormalize(s, e + t)
    return renormalize(s, e + f)


def sum_rows(a: np.ndarray, low: np.ndarray | float = 0.0, scratch: np.ndarray | None = None) -> DD:
    """a[0] + a[1] + ... + low, (k, m) -> (m,), in double-double; a is overwritten.

    Pairwise TwoSum over the rows, the errors summed in float64 (Sum2 of Ogita, Rump & Oishi 2005,
    in a tree): off by at most ~k log2(k) 2^-106 sum |a|, as if summed in twice the precision.
    For short sums over many columns; scratch: like a."""
    k = a.shape[0]
    scratch = np.empty_like(a) if scratch is None else scratch
    e = np.zeros(a.shape[1:])
    e += low
    while k > 1:
        h = k // 2
        x, y, s, bb = a[:h], a[h:2 * h], scratch[:h], scratch[h:2 * h]
        np.add(x, y, out=s)  # TwoSum(x, y) = (s, (x - (s - bb)) + (y - bb)), bb = s - x, in place
        np.subtract(s, x, out=bb)
        y -= bb
        np.subtract(s, bb, out=bb)
        x -= bb
        x += y
        e += x.sum(axis=0)
        if k % 2:
            a[h] = a[k - 1]
        a[:h] = s
        k = h + k % 2
    return renormalize(a[0].copy(), e)


def exact_sums(a: np.ndarray, axis: int, low: np.ndarray | float = 0.0,
               scratch: np.ndarray | None = None) -> DD:
    """Sums of a along axis (0 or 1 of a 2-d a), plus low, in double-double; a is overwritten.

    ExtractScalar: with sigma = 2^k >= 2^M max|a| over the summed axis (n <= 2^M terms),
    q = fl(fl(sigma + a) - sigma) is exact, q is a multiple of 2^-53 sigma, |a - q| <= 2^-53 sigma,
    so the float sum of the n q's is exact, in any order. Two such levels leave remainders
    below 2^(2M - 105) max|a|, whose float sum is off by at most ~2^(3M - 159) max|a|
    (2^-126 for n = 2048): more digits than a double-double holds, in a few vectorized calls.
    """
    M = max(1, math.ceil(math.log2(a.shape[axis])))
    scratch = np.abs(a, out=scratch)
    sigma = np.ldexp(1.0, np.frexp(scratch.max(axis=axis, keepdims=True))[1] + M)
    hi, lo = None, None
    for _ in range(2):
        np.add(a, sigma, out=scratch)
        scratch -= sigma
        a -= scratch
        s = scratch.sum(axis=axis)
        hi, lo = (s, np.zeros_like(s)) if hi is None else two_sum(hi, s)
        sigma *= 2.0 ** (M - 53)
    lo += a.sum(axis=axis)
    lo += low
    return renormalize(hi, lo)


def powers(x: np.ndarray, degree: int) -> list[DD]:
    """[x^1, ..., x^degree] as double-double pairs: exact to about 32 digits, unlike x**k."""
    out = [(x, np.zeros_like(x))]
    xs = split(x)
    for _ in range(degree - 1):
        ph, pl = out[-1]
        p = ph * x
        e = product_error(p, split(ph), xs)
        e += pl * x
        out.append(renormalize(p, e))
    return out
