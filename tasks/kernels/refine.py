"""Iterative refinement of a least-squares solution to the exact solution of the float64 data.

Corrected semi-normal equations (Bjorck 1987): with the gradient g = X^T (y - X beta) computed in
double-double and the correction solved on the well-conditioned basis W = X T,

    delta = T (W^T W)^-1 T^T g = T R^-1 R^-T T^T g,   beta <- beta + delta,

the fixed point is X^T r = 0 to about 32 digits. T is applied in exact rational arithmetic, so its
own conditioning (~1e15 for NIST's Filip) costs nothing; each step shrinks the error by about
cond(W)^2 * 2^-53. The n-row work of a step is one streamed pass: block by block, the residual
r = y - X beta in double-double, then X^T r and sum r^2 from it, merged in double-double; no
n-length array is ever held.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from functools import partial

import numpy as np

from tasks.kernels import compiled
from tasks.kernels import ddarith as dd
from tasks.kernels import rational as rq
from tasks.kernels.design import Design
from tasks.kernels.passes import LOCAL, Passes
from tasks.kernels.tsqr import Geometry

MAX_STEPS = 8
# Values per (n_terms, rows) buffer of a chunk: the ~10 buffers of a kernel call (~2.5 MB) stay in
# a core's L2 cache; larger chunks run 1.5x slower, smaller ones pay numpy's per-call overhead.
CHUNK_VALUES = 32768
# A pass's sums, in double-double: sum r^2, sum d, sum d^2 with d = y - center, then X^T r.
RSS, S1, S2, GRADIENT = 0, 1, 2, 3


@dataclass(frozen=True)
class Refined:
    """beta: (n_params,) float64, the rounded exact solution; rss: sum of squared residuals of the
    unrounded solution; tss: sum (y - mean y)^2 when the design spans the constant, sum y^2 otherwise; steps taken;
    converged: the last correction was below float64 resolution."""

    beta: np.ndarray
    rss: float
    tss: float
    steps: int
    converged: bool


class _Workspace:
    """The buffers of one part's pass, reused chunk after chunk: on this scale fresh temporaries
    (page faults, numpy's checks for them) cost more than the double-double arithmetic."""

    def __init__(self, design: Design, beta: np.ndarray, rows: int):
        q, k = len(design.term_names), int(design.intercept)
        self.chunk = chunk = max(256, CHUNK_VALUES // q)  # rows per kernel call
        self.X, self.X1, self.X2, self.E = (np.empty((q, chunk)) for _ in range(4))
        self.H = np.empty((q + 1, chunk))
        self.G = np.empty((rows, chunk))
        self.T = np.empty((max(q + 1, rows), chunk))
        # -beta's terms' hi part and its Dekker halves, one row each, repeated along the chunk:
        # same-shape products run at twice the speed of broadcast ones.
        b = -beta[0, k:, None]
        self.B = np.repeat(np.stack([b, *dd.split(b)]), chunk, axis=2)

    def terms(self, design: Design, features: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """The term columns of a chunk as rows (n_terms, m): hi, and lo for polynomial powers in
        double-double (x**k in float64 is not exact); lo is None when the terms are the features."""
        X = self.X[:, :len(features)]
        if design.degree == 1:  # the features are the terms (a formula's: computed once per block)
            np.copyto(X, features.T)
            return X, None
        pw = dd.powers(np.ascontiguousarray(features[:, 0]), design.degree)
        for j, (h, _) in enumerate(pw):
            X[j] = h
        return X, np.array([lo for _, lo in pw])


def _residual(design: Design, ws: _Workspace, X: np.ndarray, Xl: np.ndarray | None, Xs: dd.DD,
              y: np.ndarray, beta: np.ndarray) -> dd.DD:
    """r = y - X beta of a chunk in double-double; X (n_terms, m) with Dekker halves Xs; beta
    (2, n_params): hi and lo parts.

    Each product x_j b_j is P + E exactly (Dekker); y - b0 - sum_j P_j is summed per row in twice
    the precision (Sum2); E and the products of beta's lo part and of the terms' lo part are ~2^-53
    smaller and summed in float64."""
    k, m = int(design.intercept), len(y)
    bh, b1, b2 = ws.B[:, :, :m]
    H, T = ws.H[:, :m], ws.T[:len(bh) + 1, :m]
    np.multiply(X, bh, out=H[1:])
    low = dd.product_error(H[1:], Xs, (b1, b2), out=ws.E[:, :m], scratch=T[1:]).sum(axis=0)
    low -= beta[1, k:] @ X
    if Xl is not None:
        low -= beta[0, k:] @ Xl
    if k:
        H[0], e = dd.two_sum(y, np.full_like(y, -beta[0, 0]))
        low += e
        low -= beta[1, 0]
    else:
        H[0] = y
    return dd.sum_rows(H, low, scratch=T)


def _chunk_sums(design: Design, ws: _Workspace, features: np.ndarray, y: np.ndarray, beta: np.ndarray,
                center: float | None, gradient: bool) -> dd.DD:
    """One chunk's sums (RSS, S1, S2, then X^T r when gradient), each in double-double."""
    m = len(y)
    X, Xl = ws.terms(design, features)
    Xs = dd.split(X, out=(ws.X1[:, :m], ws.X2[:, :m]))
    rh, rl = _residual(design, ws, X, Xl, Xs, y, beta)
    rs = dd.split(rh)
    k, p = int(design.intercept), design.n_params
    rows = GRADIENT + (p if gradient else 0)
    # Each row: exact products (summed by ExtractScalar) and their errors (summed in float64).
    H, low = ws.G[:rows, :m], np.zeros(rows)
    np.multiply(rh, rh, out=H[RSS])
    low[RSS] = dd.product_error(H[RSS], rs, rs).sum() + 2 * float(rh @ rl)
    if center is None:
        H[S1:S2 + 1] = 0.0
    else:
        d, e = dd.two_sum(y, np.full_like(y, -center))
        H[S1], low[S1] = d, e.sum()
        np.multiply(d, d, out=H[S2])
        ds = dd.split(d)
        low[S2] = dd.product_error(H[S2], ds, ds).sum() + 2 * float(d @ e)
    if gradient:
        np.multiply(X, rh, out=H[GRADIENT + k:])
        E = dd.product_error(H[GRADIENT + k:], Xs, rs, out=ws.E[:, :m], scratch=ws.T[:p - k, :m])
        low[GRADIENT + k:] = E.sum(axis=1)
        low[GRADIENT + k:] += X @ rl
        if Xl is not None:
            low[GRADIENT + k:] += Xl @ rh
        if k:
            H[GRADIENT], low[GRADIENT] = rh, rl.sum()
    return dd.exact_sums(H, 1, low, scratch=ws.T[:rows, :m])


def part_sums(beta: np.ndarray, center: float | None, gradient: bool, design: Design) -> dd.DD:
    """The sums of one part of the design (see _chunk_sums), merged chunk by chunk in row order."""
    fold = SumsFold(design, beta, center, gradient)
    for features, y in design.blocks():
        fold.add(features, y)
    return fold.total


class SumsFold:
    """part_sums block by block, for a pass that reads each block for more than these sums: add() the
    part's blocks in row order, then read total.

    One compiled sweep per block where numba runs (kernels/compiled.py; straight-line terms, parts of
    compiled.MIN_ROWS rows and more), else the numpy kernels. A formula's terms keep the numpy
    kernels: its passes are bound by the terms' evaluation, and the 63 MiB of LLVM that numba loads
    would cost its runs more memory than the sweep saves time."""

    def __init__(self, design: Design, beta: np.ndarray, center: float | None, gradient: bool):
        self.design, self.beta, self.center, self.gradient = design, beta, center, gradient
        rows = GRADIENT + (design.n_params if gradient else 0)
        self.total: dd.DD = (np.zeros(rows), np.zeros(rows))
        self.sweep = None
        if design.degree == 1 and design.formula is None and compiled.usable(design.n):
            k = int(design.intercept)
            b0h, b0l = (float(beta[0, 0]), float(beta[1, 0])) if k else (0.0, 0.0)
            self.sweep = partial(compiled.refine_sums, bh=np.ascontiguousarray(beta[0, k:]),
                                 bl=np.ascontiguousarray(beta[1, k:]), b0h=b0h, b0l=b0l, intercept=bool(k),
                                 center=0.0 if center is None else center, centered=center is not None,
                                 gradient=gradient)
        else:
            self.ws = _Workspace(design, beta, rows)

    def add(self, features: np.ndarray, y: np.ndarray, terms: np.ndarray | None = None) -> None:
        """One block: its raw features (a formula's term values in `terms` when the caller has them)."""
        if not len(y):
            return
        if self.sweep is not None:
            # Two halves of the block on both cores (the kernel releases the GIL), cut on a Dot2
            # chunk boundary and added in row order: the same sums on one core or many.
            first, second = compiled.in_halves(self.sweep, features, y, compiled.CHUNK)
            self.total = dd.add(dd.add(self.total, first), second)
            return
        if self.design.formula is not None:  # its terms once per block: formulaic costs milliseconds a call
            features = self.design.terms_of(features) if terms is None else terms
        for a in range(0, len(y), self.ws.chunk):
            b = a + self.ws.chunk
            self.total = dd.add(self.total, _chunk_sums(self.design, self.ws, features[a:b], y[a:b], self.beta,
                                                        self.center, self.gradient))




def _split_params(beta: list[Fraction]) -> np.ndarray:
    """(2, p): the float64 rounding of each rational and the rounding of what is left."""
    hi = [float(b) for b in beta]
    return np.array([hi, [float(b - Fraction(h)) for b, h in zip(beta, hi)]])


def _sums(parts: list[Design], beta: list[Fraction], center: float | None, gradient: bool,
          passes: Passes) -> list[Fraction]:
    """One pass, part by part: the sums as exact rationals of their double-doubles."""
    total = None
    for part in passes.map(partial(part_sums, _split_params(beta), center, gradient), parts):
        total = part if total is None else dd.add(total, part)
    return [Fraction(float(h)) + Fraction(float(lo)) for h, lo in zip(*total)]


def residual_sum_squares(design: Design, params: np.ndarray, passes: Passes = LOCAL) -> float:
    """sum (y - X params)^2 of float64 params, residuals and sum in double-double, streamed."""
    beta = [Fraction(float(v)) for v in params]
    return float(_sums(passes.split(design), beta, None, False, passes)[RSS])


def params_beta(params: np.ndarray) -> np.ndarray:
    """float64 params as part_sums' and SumsFold's beta: (2, p), hi and lo (zero) parts."""
    return _split_params([Fraction(float(v)) for v in params])


def total_rss(total: dd.DD) -> float:
    """The RSS of merged part sums (gradient or not), rounded once from its double-double."""
    return float(Fraction(float(total[0][RSS])) + Fraction(float(total[1][RSS])))


def _rss_after_step(rss: Fraction, g: list[Fraction], delta: list[Fraction], Ru: np.ndarray,
                    cond: float) -> Fraction | None:
    """RSS(beta + delta) without a pass over the data, or None when it cannot be trusted.

    delta = T u exactly, so X delta = X T u = W u and, with r = y - X beta and g = X^T r,
        RSS(beta + delta) = |r - X delta|^2 = RSS(beta) - 2 delta^T g + |W u|^2,  |W u| = |R u|.
    RSS(beta) and g are double-double, delta^T g is exact; |R u|^2 carries R's and W's rounding,
    a relative error of at most ~(p + degree^2) cond(R) 2^-53 (here 2^-40 cond(R)). That must not
    show in the result: near the fixed point |R u|^2 is tiny against the RSS, so the last step
    costs no extra pass; otherwise (a perfect fit, a large last step) the caller recomputes it.
    """
    quad = float(Ru @ Ru)
    new = rss - 2 * sum(d * gi for d, gi in zip(delta, g)) + Fraction(quad)
    return new if new >= 0 and 2.0**-40 * cond * quad <= 2.0**-60 * new else None


def refine(design: Design, geometry: Geometry, passes: Passes = LOCAL) -> Refined:
    """Refine the TSQR solution until the correction is below float64 resolution (or MAX_STEPS)."""
    split = passes.split(design)  # once: the parts are the same at every pass
    basis, R = geometry.basis, geometry.R
    beta = [Fraction(float(b)) for b in geometry.initial_solution()]
    # The first pass also sums d = y - center and d^2 for the total sum of squares:
    # sum (y - mean)^2 = sum d^2 - (sum d)^2 / n for any float center (0 without an intercept).
    centered = geometry.spans_constant(design.n)  # an intercept, or statsmodels' implicit constant
    center = float(geometry.y.mean[0]) if centered else 0.0
    sums = _sums(split, beta, center, True, passes)
    tss = sums[S2] - (sums[S1] ** 2 / design.n if centered else 0)
    # Size of the solution in W coordinates, for a scale-free stopping rule.
    scale = float(np.linalg.norm(np.linalg.solve(R, geometry.qty)))
    threshold = 2.0**-60 * max(scale, 1e-300)
    # One step shrinks the error in W coordinates by about rho = cond(W)^2 * 2^-53 (with a safety
    # factor); T maps what is left to the parameters, amplified by at most |T| 1.
    cond = float(np.linalg.cond(R))
    rho = 10 * len(beta) * cond**2 * 2.0**-53
    amplification = np.array([float(sum(abs(v) for v in row)) for row in basis.exact])
    last, converged, steps = math.inf, False, 0
    rss = sums[RSS]
    for steps in range(1, MAX_STEPS + 1):
        g = sums[GRADIENT:]
        h = np.array([float(v) for v in rq.matvec(basis.exact, g, transpose=True)])
        u = np.linalg.solve(R, np.linalg.solve(R.T, h))  # (W^T W)^-1 h, W = QR
        size = float(np.linalg.norm(u))
        if not math.isfinite(size) or size >= last:
            break  # not contracting: the design is too close to rank deficient for this solver
        delta = rq.matvec(basis.exact, [Fraction(float(v)) for v in u])
        beta = [b + d for b, d in zip(beta, delta)]
        last = size
        # Converged when the correction is below float64 resolution, or, for straight-line terms,
        # when the error it leaves (about rho * |T| 1 * max|u| in the parameters' coordinates)
        # is: that saves a whole pass over the data. Polynomial maps T amplify the float64
        # rounding of u itself by up to 1e17 (x in [1000, 1005], degree 6), so they always
        # take the confirming step.
        left = rho * amplification * float(np.max(np.abs(u)))
        predicted = design.degree == 1 and all(e <= 2.0**-56 * abs(float(b)) for e, b in zip(left, beta))
        converged = size <= threshold or predicted
        if converged or steps == MAX_STEPS:
            # The statistics belong to the unrounded solution: rounding beta to float64 can move
            # X beta a lot on ill-conditioned designs.
            after = _rss_after_step(rss, g, delta, R @ u, cond)
            rss = after if after is not None else _sums(split, beta, None, False, passes)[RSS]
            break
        sums = _sums(split, beta, None, True, passes)
        rss = sums[RSS]
    return Refined(np.array([float(b) for b in beta]), float(rss), float(tss), steps, converged)
