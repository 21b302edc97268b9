"""Double-double arithmetic on numpy arrays: about 32 significant digits from float64 operations.

A value is a pair (hi, lo) with hi = fl(hi + lo). The error-free transformations are Knuth's
TwoSum and Dekker's TwoProduct (Dekker 1971; Ogita, Rump & Oishi 2005).
"""

from __future__ import annotations

import numpy as np

_SPLITTER = 134217729.0  # 2^27 + 1: splits a float64 into two 26-bit halves


def two_sum(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """s + e = a + b exactly, with s = fl(a + b)."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def split(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """a = hi + lo exactly, each half with at most 26 significant bits."""
    t = _SPLITTER * a
    hi = t - (t - a)
    return hi, a - hi


def two_prod(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """p + e = a * b exactly, with p = fl(a * b)."""
    p = a * b
    ah, al = split(a)
    bh, bl = split(b)
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


def renormalize(hi: np.ndarray, lo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(hi, lo) with hi = fl(hi + lo)."""
    s = hi + lo
    return s, lo - (s - hi)


def sum_rows(hi: np.ndarray, lo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row sums of hi + lo, (p, n) -> (p,), in double-double by pairwise TwoSum.

    Each level adds the two halves of every row exactly (TwoSum) and carries the errors in lo,
    so the result is off by about 2^-104 times the sum of magnitudes, whatever the cancellation.
    """
    hi, lo = np.atleast_2d(hi), np.atleast_2d(lo)
    while hi.shape[1] > 1:
        if hi.shape[1] % 2:
            pad = np.zeros((hi.shape[0], 1))
            hi, lo = np.hstack([hi, pad]), np.hstack([lo, pad])
        m = hi.shape[1] // 2
        s, e = two_sum(hi[:, :m], hi[:, m:])
        hi, lo = s, lo[:, :m] + lo[:, m:] + e
    return renormalize(hi[:, 0], lo[:, 0])


def powers(x: np.ndarray, degree: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """[x^1, ..., x^degree] as double-double pairs: exact to about 32 digits, unlike x**k."""
    out = [(x, np.zeros_like(x))]
    for _ in range(degree - 1):
        ph, pl = out[-1]
        p, e = two_prod(ph, x)
        out.append(renormalize(p, e + pl * x))
    return out


def sum_squares(hi: np.ndarray, lo: np.ndarray) -> float:
    """sum (hi + lo)^2 in double-double, rounded once."""
    p, e = two_prod(hi, hi)
    s, t = sum_rows(p, e + 2 * hi * lo)
    return float(s[0] + t[0])
