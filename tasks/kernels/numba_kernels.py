"""The numba kernels behind tasks/kernels/compiled.py (which imports this module only when a pass
needs it: importing numba costs about 0.3 s). Module-level functions, so that numba's on-disk cache
(cache=True) keeps them between processes."""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

CHUNK = 1024  # rows per Dot2 sum; chunks are added in double-double
RSS, S1, S2, GRADIENT = 0, 1, 2, 3  # as kernels/refine.py


@intrinsic
def _fma(typingctx, a, b, c):
    """a * b + c rounded once (LLVM's llvm.fma: the hardware instruction, or libm's exact fma)."""
    signature = types.float64(types.float64, types.float64, types.float64)

    def codegen(context, builder, sig, args):
        double = ir.DoubleType()
        fn = builder.module.declare_intrinsic("llvm.fma", [double], ir.FunctionType(double, [double] * 3))
        return builder.call(fn, args)

    return signature, codegen

@njit(cache=True, nogil=True, inline="always")
def two_sum(a, b):
    """s + e == a + b exactly, s = fl(a + b) (Knuth; no condition on |a|, |b|)."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)

@njit(cache=True, nogil=True, inline="always")
def two_prod(a, b):
    """p + e == a * b exactly, p = fl(a * b) (with an exact fma; barring underflow of e)."""
    p = a * b
    return p, _fma(a, b, -p)

@njit(cache=True, nogil=True)
def error_free(a, b):
    """TwoSum and TwoProduct of each pair a[i], b[i], as the kernels compute them (for tests):
    (s, e) with s + e == a + b, and (p, f) with p + f == a * b."""
    s, e, p, f = np.empty_like(a), np.empty_like(a), np.empty_like(a), np.empty_like(a)
    for i in range(len(a)):
        s[i], e[i] = two_sum(a[i], b[i])
        p[i], f[i] = two_prod(a[i], b[i])
    return (s, e), (p, f)

@njit(cache=True, nogil=True)
def _add(hi, lo, h2, l2):
    """(hi, lo) + (h2, l2) in double-double, renormalized."""
    s, e = two_sum(hi, h2)
    e += lo + l2
    s2 = s + e
    return s2, e - (s2 - s)

@njit(cache=True, nogil=True)
def refine_sums(X, y, bh, bl, b0h, b0l, intercept, center, centered, gradient):
    """The refinement pass's sums over rows X (m, q) and y (m,): (hi, lo) (rows,) each, rows =
    GRADIENT + (p if gradient else 0), p = q + intercept: sum r^2, sum d, sum d^2 (zero unless
    centered), then X^T r (the intercept's sum r first). beta: the terms' hi and lo parts bh, bl
    (q,), the intercept's b0h, b0l."""
    m, q = X.shape
    k = 1 if intercept else 0
    rows = GRADIENT + ((q + k) if gradient else 0)
    hi, lo = np.zeros(rows), np.zeros(rows)
    S, C = np.zeros(rows), np.zeros(rows)
    for a in range(0, m, CHUNK):
        S[:] = 0.0
        C[:] = 0.0
        for i in range(a, min(a + CHUNK, m)):
            # r = y - b0 - sum_j x_j b_j in double-double: exact products, their high parts summed
            # by TwoSum, the rest (product errors, beta's low parts) in float64
            sh, sl = y[i], 0.0
            if intercept:
                sh, e = two_sum(sh, -b0h)
                sl += e - b0l
            for j in range(q):
                x = X[i, j]
                p, pe = two_prod(x, bh[j])
                sh, e = two_sum(sh, -p)
                sl += e - pe - x * bl[j]
            rh = sh + sl
            rl = sl - (rh - sh)
            p, pe = two_prod(rh, rh)
            S[RSS], e = two_sum(S[RSS], p)
            C[RSS] += e + pe + 2.0 * rh * rl
            if centered:
                dh, dl = two_sum(y[i], -center)
                S[S1], e = two_sum(S[S1], dh)
                C[S1] += e + dl
                p, pe = two_prod(dh, dh)
                S[S2], e = two_sum(S[S2], p)
                C[S2] += e + pe + 2.0 * dh * dl
            if gradient:
                if intercept:
                    S[GRADIENT], e = two_sum(S[GRADIENT], rh)
                    C[GRADIENT] += e + rl
                for j in range(q):
                    x = X[i, j]
                    p, pe = two_prod(x, rh)
                    g = GRADIENT + k + j
                    S[g], e = two_sum(S[g], p)
                    C[g] += e + pe + x * rl
        for r in range(rows):
            hi[r], lo[r] = _add(hi[r], lo[r], S[r], C[r])
    return hi, lo
