"""Iterative refinement of a least-squares solution to the exact solution of the float64 data.

Corrected semi-normal equations (Bjorck 1987): with the gradient g = X^T (y - X beta) computed in
double-double and the correction solved on the well-conditioned basis W = X T,

    delta = T (W^T W)^-1 T^T g = T R^-1 R^-T T^T g,   beta <- beta + delta,

the fixed point is X^T r = 0 to about 32 digits. T is applied in exact rational arithmetic, so its
own conditioning (~1e15 for NIST's Filip) costs nothing; each step shrinks the error by about
cond(W)^2 * 2^-53. The n-row work is two double-double passes over the design per step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from tasks.kernels import ddarith as dd
from tasks.kernels import rational as rq
from tasks.kernels.design import Design
from tasks.kernels.tsqr import Geometry

MAX_STEPS = 8


@dataclass(frozen=True)
class Refined:
    """beta: (n_params,) float64, the rounded exact solution; residual (hi, lo): (n,) each, of the
    unrounded solution; steps taken; converged: the last correction was below float64 resolution."""

    beta: np.ndarray
    residual: tuple[np.ndarray, np.ndarray]
    steps: int
    converged: bool


class ExactDesign:
    """The design X = hi + lo in double-double, stored transposed: (n_params, n) rows are columns.

    Polynomial powers are exact to ~32 digits (x**k in float64 is not). Every pass works on blocks
    of CHUNK observations, so its temporaries stay in cache instead of costing fresh memory.
    """

    CHUNK = 16384

    def __init__(self, design: Design):
        n, k = design.n, int(design.intercept)
        p = design.n_params
        self.hi = np.empty((p, n))
        self.lo = np.zeros((p, n)) if design.degree > 1 else None
        if k:
            self.hi[0] = 1.0
        if design.degree > 1:
            for j, (h, l) in enumerate(dd.powers(design.features[:, 0], design.degree)):
                self.hi[k + j], self.lo[k + j] = h, l
        else:
            self.hi[k:] = design.features.T
        self.col_max = np.abs(self.hi).max(axis=1)
        self.y = design.y

    def _blocks(self):
        n = self.y.shape[0]
        for a in range(0, n, self.CHUNK):
            b = min(a + self.CHUNK, n)
            yield a, b, self.hi[:, a:b], (None if self.lo is None else self.lo[:, a:b])

    def residual(self, beta: list[Fraction]) -> tuple[np.ndarray, np.ndarray]:
        """r = y - X beta in double-double, beta exact (two floats per entry)."""
        bh = np.array([float(b) for b in beta])[:, None]
        bl = np.array([float(b - Fraction(float(h))) for b, h in zip(beta, bh[:, 0])])[:, None]
        rh, rl = np.empty_like(self.y), np.empty_like(self.y)
        for a, b, hi, lo in self._blocks():
            P, E = dd.two_prod(hi, bh)
            E += hi * bl
            if lo is not None:
                E += lo * bh
            sh, sl = self.y[a:b].copy(), np.zeros(b - a)
            for j in range(P.shape[0]):
                sh, t = dd.two_sum(sh, -P[j])
                sl += t - E[j]
            rh[a:b], rl[a:b] = dd.renormalize(sh, sl)
        return rh, rl

    def update_residual(self, r: tuple[np.ndarray, np.ndarray], beta: list[Fraction],
                        delta: list[Fraction]) -> tuple[np.ndarray, np.ndarray]:
        """The residual after beta += delta: r - X delta with X delta in float64 when its rounding
        (at most 2^-52 sum_j |delta_j| max|X_j|) is below 2^-60 of r's size; else recomputed."""
        d = np.array([float(v) for v in delta])
        bound = 2.0**-52 * float(np.dot(np.abs(d), self.col_max))
        if self.lo is not None or bound > 2.0**-60 * float(np.sqrt(np.mean(r[0] ** 2))):
            return self.residual(beta)
        return dd.renormalize(r[0], r[1] - d @ self.hi)

    def gradient(self, r: tuple[np.ndarray, np.ndarray]) -> list[Fraction]:
        """g = X^T r, (n_params,), in double-double, as exact rationals."""
        rh, rl = r
        parts_h, parts_l = [], []
        for a, b, hi, lo in self._blocks():
            P, E = dd.two_prod(hi, rh[a:b])
            E += hi * rl[a:b]
            if lo is not None:
                E += lo * rh[a:b]
            gh, gl = dd.sum_rows(P, E)
            parts_h.append(gh)
            parts_l.append(gl)
        gh, gl = dd.sum_rows(np.column_stack(parts_h), np.column_stack(parts_l))
        return [Fraction(h) + Fraction(l) for h, l in zip(gh, gl)]


def residual_of(design: Design, params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """y - X params in double-double, for any float64 parameters (the SGD model's, say)."""
    return ExactDesign(design).residual([Fraction(float(v)) for v in params])


def refine(design: Design, geometry: Geometry, beta0: np.ndarray) -> Refined:
    """Refine beta0 until the correction is below float64 resolution (or MAX_STEPS)."""
    X = ExactDesign(design)
    basis, R = geometry.basis, geometry.R
    beta = [Fraction(float(b)) for b in beta0]
    # Size of the solution in W coordinates, for a scale-free stopping rule.
    scale = float(np.linalg.norm(np.linalg.solve(R, geometry.qty)))
    threshold = 2.0**-60 * max(scale, 1e-300)
    # One step shrinks the error in W coordinates by about rho = cond(W)^2 * 2^-53 (with a safety
    # factor); T maps what is left to the parameters, amplified by at most |T| 1.
    rho = 10 * len(beta) * np.linalg.cond(R) ** 2 * 2.0**-53
    amplification = np.array([float(sum(abs(v) for v in row)) for row in basis.exact])
    last, converged, steps = math.inf, False, 0
    r = X.residual(beta)
    for steps in range(1, MAX_STEPS + 1):
        h = np.array([float(v) for v in rq.matvec(basis.exact, X.gradient(r), transpose=True)])
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
        if size <= threshold or predicted:
            converged = True
            r = X.update_residual(r, beta, delta)
            break
        r = X.residual(beta)
    # The residual of the unrounded solution: rounding beta to float64 can move X beta a lot on
    # ill-conditioned designs, and the statistics (RSS, SEs, R^2) belong to the exact fit.
    return Refined(np.array([float(b) for b in beta]), r, steps, converged)
