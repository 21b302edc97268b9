"""The design of a linear model: which terms it has, their values, and a well-conditioned twin."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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
    """A well-conditioned basis W that spans the same column space as the design.

    W: (n, n_params). For polynomials, W's columns are Chebyshev polynomials of
    z = (x - shift) / scale with z in [-1, 1]; otherwise, centered (with an intercept) columns
    divided by their norm. to_params: (n_params, n_params), with design params beta = to_params @ c
    for coefficients c on W, up to rounding.
    """

    W: np.ndarray
    to_params: np.ndarray


def scaled_basis(design: Design) -> ScaledBasis:
    """Build the well-conditioned twin of the design (used to test rank and to precondition solves)."""
    if design.degree > 1:
        return _chebyshev_basis(design)
    terms = design.terms
    p = terms.shape[1]
    center = terms.mean(axis=0) if design.intercept else np.zeros(p)
    centered = terms - center
    norms = np.linalg.norm(centered, axis=0)
    norms[norms == 0] = 1.0
    W = centered / norms
    # beta_j = c_j / norm_j; intercept b0 = c0 - sum_j c_j * center_j / norm_j
    scale = np.diag(1.0 / norms)
    if not design.intercept:
        return ScaledBasis(W, scale)
    to_params = np.zeros((p + 1, p + 1))
    to_params[0, 0] = 1.0
    to_params[0, 1:] = -center / norms
    to_params[1:, 1:] = scale
    return ScaledBasis(np.column_stack([np.ones(design.n), W]), to_params)


def _chebyshev_basis(design: Design) -> ScaledBasis:
    x = design.features[:, 0]
    K = design.degree
    if design.intercept:
        lo, hi = float(x.min()), float(x.max())
        shift, scale = (hi + lo) / 2, (hi - lo) / 2 or 1.0
        ks = range(0, K + 1)
    else:
        # Without an intercept the basis must not contain a constant: scale only, and use z^k.
        shift, scale = 0.0, float(np.abs(x).max()) or 1.0
        ks = range(1, K + 1)
    z = (x - shift) / scale
    if design.intercept:
        W = np.polynomial.chebyshev.chebvander(z, K)
        # Chebyshev T_k(z) -> power series in z -> power series in x = shift + scale * z.
        cheb_to_z = np.zeros((K + 1, K + 1))
        for k in ks:
            coef = np.polynomial.chebyshev.cheb2poly(np.eye(K + 1)[k])
            cheb_to_z[: len(coef), k] = coef
        z_to_x = _shift_matrix(shift, scale, K)
        return ScaledBasis(W, z_to_x @ cheb_to_z)
    W = np.column_stack([z**k for k in ks])
    return ScaledBasis(W, np.diag([scale ** -k for k in ks]))


def _shift_matrix(shift: float, scale: float, K: int) -> np.ndarray:
    """M with sum_k c_k z^k = sum_j (M @ c)_j x^j for z = (x - shift) / scale."""
    from math import comb

    M = np.zeros((K + 1, K + 1))
    # z^k = scale^-k * sum_j C(k, j) x^j (-shift)^(k - j)
    for k in range(K + 1):
        for j in range(k + 1):
            M[j, k] = comb(k, j) * (-shift) ** (k - j) / scale**k
    return M
