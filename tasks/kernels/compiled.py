"""Compiled kernels (numba): error-free transforms and the refinement pass's sums, fused, in one sweep
over a block's rows.

TwoSum (Knuth) and TwoProduct (one multiply and one fused multiply-add: llvm.fma, since numba has no
math.fma) give a + b and a * b exactly as s + e. Compiled without fastmath: LLVM then keeps every
operation as written (fastmath would reassociate the error terms away). With them, one sweep forms
each row's residual r = y - X beta in double-double (Ogita, Rump and Oishi's Dot2: the products'
exact high parts summed by TwoSum, every low part in float64) and accumulates sum r^2, sum d, sum d^2
(d = y - center) and X^T r, each as Dot2 sums over chunks of CHUNK rows whose double-double
results are then added in row order: the error of each sum is at most about u |sum| + (2 CHUNK u)^2
sum |terms|, far below the float64 resolution the refinement needs. The numpy kernels
(kernels/refine.py, kernels/ddarith.py) compute the same sums with 40 array temporaries per value;
these read each value once. Every kernel releases the GIL (nogil) and is cached on disk (cache=True):
the compile is paid once per machine (`make install` pays it), never by a run.

AVAILABLE says whether numba imported and compiles here; WHY says why not (the log says it once).
"""

from __future__ import annotations

import logging

import numpy as np

CHUNK = 1024  # rows per Dot2 sum; chunks are added in double-double
RSS, S1, S2, GRADIENT = 0, 1, 2, 3  # as kernels/refine.py

try:
    from llvmlite import ir
    from numba import njit, types
    from numba.extending import intrinsic
except ImportError as error:  # pragma: no cover - exercised by the no-numba test in a subprocess
    AVAILABLE, WHY = False, f"numba is not installed ({error})"
else:
    AVAILABLE, WHY = True, ""


if AVAILABLE:
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


_checked: list[bool] = []  # [whether the kernels run here], once per process


def usable() -> bool:
    """Whether the compiled kernels run here: numba imports and a tiny call compiles (or loads from
    the cache) and gives the right answer. Otherwise one log line says that the numpy kernels run."""
    global WHY
    if not _checked:
        ok = AVAILABLE
        if ok:
            try:
                hi, lo = refine_sums(np.ones((2, 1)), np.array([3.0, 3.0]), np.ones(1), np.zeros(1), 1.0, 0.0,
                                     True, 0.0, False, True)
                ok = bool(hi[GRADIENT] == 2.0 and hi[RSS] == 2.0)
                WHY = "" if ok else "the compiled kernels gave a wrong answer"
            except Exception as error:  # noqa: BLE001 - a broken compiler path of any kind
                ok, WHY = False, f"numba cannot compile here ({type(error).__name__}: {error})"
        if not ok:
            logging.getLogger("linreg_flow").warning("%s: the numpy kernels run instead (slower, as accurate)", WHY)
        _checked.append(ok)
    return _checked[0]


def warm() -> None:
    """Compile every kernel for the array layouts the passes use (cache=True keeps them on disk):
    `make install` calls it, so that no run pays the compile."""
    if not usable():
        return
    X = np.ones((4, 2))
    for layout in (X, np.asfortranarray(X), X[:, :1]):
        for flags in ((True, True), (False, False)):
            refine_sums(layout, np.ones(4), np.ones(layout.shape[1]), np.zeros(layout.shape[1]), 0.0, 0.0,
                        flags[0], 0.0, flags[1], flags[1])
    error_free(np.ones(2), np.ones(2))


if __name__ == "__main__":
    warm()
    print("compiled kernels:", "ready" if usable() else f"unavailable ({WHY})")
