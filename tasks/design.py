"""The design of a linear model: which terms it has, their values, and a well-conditioned twin."""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from tasks import rational


@dataclass(frozen=True)
class Design:
    """y ~ b0 + sum_j b_j * terms[:, j].

    features: (n, n_features) raw predictor columns; y: (n,); names: feature column names.
    degree > 1 only with one feature: terms are x, x^2, ..., x^degree.
    """

    features: np.ndarray
    y: np.ndarray
    names: tuple[str, ...]
    target: str
    degree: int = 1
    intercept: bool = True

    @property
    def n(self) -> int:
        return int(self.y.shape[0])

    @property
    def term_names(self) -> tuple[str, ...]:
        if self.degree == 1:
            return self.names
        x = self.names[0]
        return tuple(x if k == 1 else f"{x}^{k}" for k in range(1, self.degree + 1))

    @property
    def n_params(self) -> int:
        return len(self.term_names) + int(self.intercept)

    @property
    def terms(self) -> np.ndarray:
        """(n, n_terms) term values in float64, on the data's original scale."""
        if self.degree == 1:
            return self.features
        x = self.features[:, 0]
        return np.column_stack([x**k for k in range(1, self.degree + 1)])

    def matrix(self) -> np.ndarray:
        """(n, n_params) full design, intercept column first when there is one."""
        if not self.intercept:
            return self.terms
        return np.column_stack([np.ones(self.n), self.terms])


@dataclass(frozen=True)
class ScaledBasis:
    """A well-conditioned basis W spanning the same column space as the design.

    W: (n, n_params). For polynomials, W's columns are Chebyshev polynomials T_k(z) of
    z = (x - shift) / scale, z in [-1, 1]; otherwise centered (with an intercept) columns divided
    by their norm. exact: (n_params, n_params) rationals with design params beta = exact @ c for
    coefficients c on W, exactly (shifts and scales are floats, so exact rationals: W is the
    design times this map up to one rounding per entry); to_params is its float64 rounding.
    """

    W: np.ndarray
    exact: tuple[tuple[Fraction, ...], ...]

    @property
    def to_params(self) -> np.ndarray:
        return np.array(rational.to_float(self.exact))


def scaled_basis(design: Design) -> ScaledBasis:
    """Build the well-conditioned twin of the design (used to test rank and to precondition solves)."""
    if design.degree > 1:
        return _chebyshev_basis(design)
    terms = design.terms
    p = terms.shape[1]
    k = int(design.intercept)
    center = terms.mean(axis=0) if design.intercept else np.zeros(p)
    W = np.empty((design.n, p + k))
    # The intercept column is 1/sqrt(n) so that every column of W has norm 1.
    ones = 1.0 / math.sqrt(design.n)
    if k:
        W[:, 0] = ones
    np.subtract(terms, center, out=W[:, k:])
    scale = np.linalg.norm(W[:, k:], axis=0)
    scale[scale == 0] = 1.0
    W[:, k:] /= scale
    # c on W: beta_j = c_j / scale_j; with an intercept b0 = c0 / sqrt(n) - sum_j c_j * center_j / scale_j
    T = [[Fraction(0)] * (p + k) for _ in range(p + k)]
    for j in range(p):
        T[k + j][k + j] = 1 / Fraction(scale[j])
        if k:
            T[0][k + j] = -Fraction(center[j]) / Fraction(scale[j])
    if k:
        T[0][0] = Fraction(ones)
    return ScaledBasis(W, tuple(map(tuple, T)))


def _chebyshev_basis(design: Design) -> ScaledBasis:
    x = design.features[:, 0]
    K = design.degree
    if design.intercept:
        lo, hi = float(x.min()), float(x.max())
        shift, scale = lo + (hi - lo) / 2, ((hi - lo) / 2) or 1.0
        z = (x - shift) / scale
        W = np.polynomial.chebyshev.chebvander(z, K)
        # T_k(z) = sum_m a_km z^m (integer a_km), z^m = scale^-m sum_j C(m, j) x^j (-shift)^(m - j)
        T = [[Fraction(0)] * (K + 1) for _ in range(K + 1)]
        for k in range(K + 1):
            a = np.polynomial.chebyshev.cheb2poly(np.eye(K + 1)[k])
            for m, a_km in enumerate(a):
                if a_km == 0:
                    continue
                for j in range(m + 1):
                    T[j][k] += (Fraction(int(a_km)) * math.comb(m, j) * Fraction(-shift) ** (m - j)
                                / Fraction(scale) ** m)
        return ScaledBasis(W, tuple(map(tuple, T)))
    # Without an intercept the basis must not contain a constant: scale only, and use z^k.
    scale = float(np.abs(x).max()) or 1.0
    z = x / scale
    W = np.column_stack([z**k for k in range(1, K + 1)])
    T = [[Fraction(0)] * K for _ in range(K)]
    for k in range(1, K + 1):
        T[k - 1][k - 1] = 1 / Fraction(scale) ** k
    return ScaledBasis(W, tuple(map(tuple, T)))
