"""The design's geometry in one streamed pass: R of the well-conditioned basis by TSQR.

Tall-skinny QR (Demmel et al. 2012): [W y] = Q [R z; 0 rho] is folded block by block,
R_k = qr([R_{k-1}; W_k y_k]).R, each step a Householder QR of a (p + 1 + m) x (p + 1) matrix: as
backward stable as one QR of the whole [W y], in O(p^2) memory beyond the block. From it:
  R (p, p):   W = Q R, so W^T W = R^T R; R's singular values are W's (rank, conditioning);
  z = Q^T y:  the least-squares solution on W is c = R^-1 z; rho^2 its residual sum of squares.
The term columns' statistics (x, x^2, ... for a polynomial) are merged in the same pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from functools import partial

import numpy as np
from threadpoolctl import threadpool_limits

from tasks.kernels import rational as rq
from tasks.kernels.design import Design, ScaledBasis, scaled_basis
from tasks.kernels.passes import LOCAL, Passes
from tasks.kernels.table import ColumnStats

# Rows per Householder fold: small enough that the (FOLD_ROWS + p) x p piece stays in cache.
FOLD_ROWS = 4096


@dataclass(frozen=True)
class Geometry:
    """basis: the map W = X T; R: (p, p) upper triangular, W = QR; qty: (p,) Q^T y;
    terms: statistics of the term columns (n_terms,); y: of the target."""

    basis: ScaledBasis
    R: np.ndarray
    qty: np.ndarray
    terms: ColumnStats
    y: ColumnStats

    def initial_solution(self) -> np.ndarray:
        """The float64 least-squares parameters (n_params,): beta = T R^-1 Q^T y."""
        return self.basis.to_params @ np.linalg.solve(self.R, self.qty)

    def spans_constant(self, n: int) -> bool:
        """Whether the design's columns span the constant (with an intercept, or as statsmodels'
        implicit constant: e.g. every level of a categorical without an intercept): |Q^T 1|^2 = n,
        from the terms' means (W^T 1 = n (mean - shift) / scale), no pass over the rows."""
        b = self.basis
        if b.ones > 0:
            return True
        if b.kind != "columns" or n == 0:
            return False
        w1 = n * (self.terms.mean - b.shift) / b.scale
        proj = np.linalg.solve(self.R.T, w1)
        return bool(proj @ proj >= n * (1 - 1e-9))

    def params_map(self) -> list[list[Fraction]]:
        """M = T R^-1 in exact rationals: the design's parameters of Q-coordinates (X = W T^-1 = Q R T^-1),
        so (X^T X)^-1 = M M^T. The entries of T are huge and cancel inside T R^-1, so it is formed on
        the rationals of R and T; R's own rounding perturbs it by about cond(W)^2 * 2^-53. Formed
        once per object (0.4 s at 57 parameters), for the fit and the training's stop rule."""
        cached = self.__dict__.get("_params_map")
        if cached is None:
            cached = rq.matmul(self.basis.exact, rq.upper_inverse(rq.fractions(self.R)))
            object.__setattr__(self, "_params_map", cached)
        return cached

    def inverse_gram(self) -> list[list[Fraction]]:
        """(X^T X)^-1 = M M^T of M = params_map(), in exact rational arithmetic (forming X^T X would
        square X's conditioning); formed once per object, for the fit's covariance and the training's
        Newton map. Each row of M as integers over one denominator: the p^2 dot products run on ints."""
        cached = self.__dict__.get("_inverse_gram")
        if cached is None:
            rows = [rq.over_one_denominator(row) for row in self.params_map()]
            p = len(rows)
            cached = [[Fraction(0)] * p for _ in range(p)]
            for i, (u, du) in enumerate(rows):
                for j in range(i, p):
                    v, dv = rows[j]
                    cached[i][j] = cached[j][i] = Fraction(sum(a * b for a, b in zip(u, v)), du * dv)
            object.__setattr__(self, "_inverse_gram", cached)
        return cached

    def __getstate__(self) -> dict:  # the cached maps are formed again where they are needed
        return {k: v for k, v in self.__dict__.items() if k not in ("_params_map", "_inverse_gram")}

    def singular_values(self) -> tuple[np.ndarray, np.ndarray]:
        """W's singular values (descending) and right singular vectors (rows of vt)."""
        _, s, vt = np.linalg.svd(self.R)
        return s, vt


def fold_r(R: np.ndarray | None, rows: np.ndarray) -> np.ndarray:
    """R of [R; rows]: (min(p, r), p), upper triangular."""
    stacked = rows if R is None else np.vstack([R, rows])
    return np.linalg.qr(stacked, mode="r")


def partial_geometry(basis: ScaledBasis, design: Design) -> tuple[np.ndarray | None, ColumnStats | None]:
    """One part's R of [W y] (None for no rows) and its terms' statistics (None for straight-line
    terms: they are the feature columns, whose statistics the design already has)."""
    polynomial = design.degree > 1
    terms = ColumnStats.empty(len(design.term_names))
    # One BLAS thread: threads split a 17-column QR too finely to gain, and on a busy 2-core
    # machine they fight (measured 9.9 s instead of 0.7 s for 1e6 x 8); parts give parallelism.
    with threadpool_limits(limits=1, user_api="blas"):
        return _fold_part(basis, design, polynomial, terms)


def _fold_part(basis: ScaledBasis, design: Design, polynomial: bool,
               terms: ColumnStats) -> tuple[np.ndarray | None, ColumnStats | None]:
    R = None
    p = design.n_params
    for features, y in design.blocks():
        Wy = np.empty((len(y), p + 1))  # [W y], W written in place (no column_stack copy)
        design.basis_rows(basis, features, Wy)
        Wy[:, p] = y
        # Householder QR of a cache-sized piece: 4096 x 17 float64 is 0.5 MB; a 65536-row block's
        # QR runs several times slower per row (measured 4.3 ms vs 16.6 ms per 65536 rows).
        for a in range(0, len(y), FOLD_ROWS):
            R = fold_r(R, Wy[a:a + FOLD_ROWS])
        if polynomial and len(y):
            terms = terms.merge(ColumnStats.of(design.terms_of(features)))
    return R, (terms if polynomial else None)


def design_geometry(design: Design, basis: ScaledBasis | None = None, passes: Passes = LOCAL) -> Geometry:
    """One pass over the design's blocks (part by part, then merged): R and Q^T y
    of its basis, and the terms' statistics."""
    basis = basis or scaled_basis(design)
    p = design.n_params
    R, terms = None, ColumnStats.empty(len(design.term_names))
    for part_R, part_terms in passes.over(partial(partial_geometry, basis), design):
        if part_R is not None:
            R = fold_r(R, part_R)  # the R of stacked R factors is the R of the stacked rows
        if part_terms is not None:
            terms = terms.merge(part_terms)
    if design.degree == 1:
        terms = design.terms_stats()
    full = np.zeros((p + 1, p + 1))
    if R is not None:
        full[: R.shape[0]] = R
    return Geometry(basis, full[:p, :p], full[:p, p], terms, design.stats.column(0))
