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

@njit(cache=True, nogil=True)
def training_sums(X, y, shift, scale, y_shift, y_scale, theta, intercept, Kt, rounding):
    """A streamed full-batch pass's sums over raw rows X (m, q), y (m,), without building the training
    rows: a = [1 (intercept), (x - shift) / scale], y_std = (y - y_shift) / y_scale (as
    training_rows.RowMap.rows computes them, operation for operation), r = a theta - y_std. Returns
    (sum r^2, A^T r (p,)), both compensated (TwoProduct and TwoSum per term, the error terms summed in
    float64), and with `rounding` training_rows.rounding_sums (2, p) in float64: sum (K a)^2 e^2 and
    sum a^2 r^2, e = |a| |theta| + |y_std|; Kt (p, p), K's transpose (C order: K a is then a sum of
    Kt's contiguous rows, which LLVM vectorizes), is read only then."""
    m, q = X.shape
    k = 1 if intercept else 0
    p = q + k
    a, ka = np.empty(p), np.empty(p)
    gh, gl = np.zeros(p), np.zeros(p)
    lh, ll = 0.0, 0.0
    rnd = np.zeros((2, p))
    for i in range(m):
        if intercept:
            a[0] = 1.0
        for j in range(q):
            a[k + j] = (X[i, j] - shift[j]) / scale[j]
        v = (y[i] - y_shift) / y_scale
        r, e = -v, abs(v)
        for j in range(p):
            r += a[j] * theta[j]
            e += abs(a[j]) * abs(theta[j])
        s, f = two_prod(r, r)
        lh, c = two_sum(lh, s)
        ll += c + f
        for j in range(p):
            s, f = two_prod(a[j], r)
            gh[j], c = two_sum(gh[j], s)
            gl[j] += c + f
        if rounding:
            ka[:] = 0.0
            for l in range(p):
                for j in range(p):
                    ka[j] += Kt[l, j] * a[l]
            for j in range(p):
                rnd[0, j] += ka[j] * ka[j] * e * e
                rnd[1, j] += a[j] * a[j] * r * r
    return lh + ll, gh + gl, rnd
