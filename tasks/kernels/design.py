"""The design of a linear model: which terms it has, their values, and a well-conditioned twin."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np

from tasks.kernels import rational
from tasks.kernels.affine import column_scaling, exact_map
from tasks.kernels.formula import FormulaModel
from tasks.kernels.table import BLOCK_ROWS, ArrayTable, ColumnStats, Table, stats_of

if TYPE_CHECKING:
    from tasks.kernels.weights import Weighting


def term_values(features: np.ndarray, degree: int) -> np.ndarray:
    """(m, n_terms) term values of (m, n_features) raw predictor values: the features themselves,
    or x, x^2, ..., x^degree of the single feature."""
    if degree == 1:
        return features
    x = features[:, 0]
    return np.column_stack([x**k for k in range(1, degree + 1)])


@dataclass(frozen=True)
class Design:
    """y ~ b0 + sum_j b_j * term_j over a table read in blocks.

    table: blocks (m, 1 + n_features), target first, then the raw predictor columns `names`.
    degree > 1 only with one feature: terms are x, x^2, ..., x^degree. formula: the terms of a
    formula model (kernels/formula.py) of the raw columns, whose statistics are term_stats (one pass
    over the table, before the basis is built); its intercept is the design's. weighting: set on the
    whitened design of a weighted model (kernels/weights.py), whose table is the whitened rows.
    """

    table: Table
    names: tuple[str, ...]
    target: str
    degree: int = 1
    intercept: bool = True
    formula: FormulaModel | None = None
    term_stats: ColumnStats | None = field(default=None, compare=False)
    weighting: Weighting | None = None

    @property
    def reports_intercept(self) -> bool:
        """Whether the model's parameters start with an intercept: the design's own or, on a whitened
        design (--weights), the model's, whose column there is sqrt(w)."""
        return self.weighting.intercept if self.weighting is not None else self.intercept

    @classmethod
    def from_arrays(cls, features: np.ndarray, y: np.ndarray, names: tuple[str, ...], target: str = "y",
                    degree: int = 1, intercept: bool = True, block_rows: int = BLOCK_ROWS) -> Design:
        """A design held in memory; features: (n, n_features), y: (n,)."""
        data = np.column_stack([np.asarray(y, dtype=np.float64), np.asarray(features, dtype=np.float64)])
        return cls(ArrayTable(data, (target, *names), block_rows), tuple(names), target, degree, intercept)

    @property
    def n(self) -> int:
        return self.table.rows

    @property
    def stats(self) -> ColumnStats:
        """Statistics of the table's columns (target first), from the pass that validated it."""
        return self.table.stats

    @property
    def term_names(self) -> tuple[str, ...]:
        if self.formula is not None:
            return self.formula.term_names
        if self.degree == 1:
            return self.names
        x = self.names[0]
        return tuple(x if k == 1 else f"{x}^{k}" for k in range(1, self.degree + 1))

    @property
    def n_params(self) -> int:
        return len(self.term_names) + int(self.intercept)

    def terms_of(self, features: np.ndarray) -> np.ndarray:
        """(m, n_terms) term values in float64 of (m, n_features) raw predictor values."""
        if self.formula is not None:
            return self.formula.terms_of(features)
        return term_values(features, self.degree)

    def basis_rows(self, basis: ScaledBasis, features: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """W rows (m, n_params) of a block of raw predictor values: a polynomial basis is a function of
        the feature, the others of the term values (out: as ScaledBasis.apply's)."""
        return basis.apply(features if self.degree > 1 else self.terms_of(features), out)

    def terms_stats(self) -> ColumnStats:
        """Statistics of the term columns: the feature columns' for straight-line terms, else
        term_stats (a formula's, from a pass) or one pass here."""
        if self.formula is None and self.degree == 1:
            return self.stats.column(slice(1, None))
        if self.term_stats is not None:
            return self.term_stats
        return stats_of((self.terms_of(f) for f, _ in self.blocks()), len(self.term_names))

    def split(self, parts: int) -> list[Design]:
        """The same model over up to `parts` runs of consecutive rows, for passes done part by part
        (map each part, then merge). A part's own stats describe the part; bases and geometry
        always come from the whole design."""
        return [replace(self, table=t) for t in self.table.split(parts)]

    def blocks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(features (m, n_features), y (m,)) block by block, in row order."""
        for block in self.table.blocks():
            yield block[:, 1:], block[:, 0]

    # Whole-column views, for small designs and tests: they read every block into memory.
    @property
    def features(self) -> np.ndarray:
        return np.concatenate([f for f, _ in self.blocks()] or [np.empty((0, len(self.names)))])

    @property
    def y(self) -> np.ndarray:
        return np.concatenate([y for _, y in self.blocks()] or [np.empty(0)])

    @property
    def terms(self) -> np.ndarray:
        return self.terms_of(self.features)

    def matrix(self) -> np.ndarray:
        """(n, n_params) full design, intercept column first when there is one."""
        return self.matrix_of(self.features)

    def matrix_of(self, features: np.ndarray) -> np.ndarray:
        """(m, n_params) design rows of a block of raw predictor values."""
        terms = self.terms_of(features)
        return np.column_stack([np.ones(len(terms)), terms]) if self.intercept else terms


@dataclass(frozen=True)
class ScaledBasis:
    """A well-conditioned basis W spanning the same column space as the design, block by block.

    W = apply(values): (m, n_params) of the raw feature (polynomials) or the term values. For polynomials, W's columns are Chebyshev polynomials
    T_k(z) of z = (x - shift) / scale, z in [-1, 1] (without an intercept: z^k, z = x / scale);
    otherwise an intercept column 1/sqrt(n) and centered columns (term - shift) / scale, scale
    the centered column's norm, so every column has norm 1. exact: (n_params, n_params) rationals
    with design params beta = exact @ c for coefficients c on W, exactly (shifts and scales are
    floats, so exact rationals: W is the design times this map up to one rounding per entry);
    to_params is its float64 rounding.
    """

    kind: str  # "columns", "chebyshev" or "powers"
    shift: np.ndarray
    scale: np.ndarray
    ones: float  # the intercept column's value (0: no intercept column)
    degree: int
    exact: tuple[tuple[Fraction, ...], ...]

    @property
    def to_params(self) -> np.ndarray:
        return np.array(rational.to_float(self.exact))

    def apply(self, features: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """W rows (m, n_params) of a block: (m, 1) raw feature values for a polynomial, else (m, n_terms)
        term values (Design.basis_rows picks which). out: an (m, >= n_params) array whose first
        columns receive them (a straight-line basis writes there without a copy)."""
        if self.kind == "chebyshev":
            W = np.polynomial.chebyshev.chebvander((features[:, 0] - self.shift[0]) / self.scale[0], self.degree)
            return W if out is None else _into(out, W)
        if self.kind == "powers":
            z = features[:, 0] / self.scale[0]
            W = np.column_stack([z**k for k in range(1, self.degree + 1)])
            return W if out is None else _into(out, W)
        k = int(self.ones > 0)
        W = np.empty((features.shape[0], features.shape[1] + k)) if out is None else out[:, :features.shape[1] + k]
        if k:
            W[:, 0] = self.ones
        np.subtract(features, self.shift, out=W[:, k:])
        W[:, k:] /= self.scale
        return W


def _into(out: np.ndarray, W: np.ndarray) -> np.ndarray:
    out[:, :W.shape[1]] = W
    return out[:, :W.shape[1]]


def scaled_basis(design: Design) -> ScaledBasis:
    """The well-conditioned twin of the design, from its column statistics alone (no pass over the rows)."""
    if design.degree > 1:
        x = design.stats.column(slice(1, None))  # the raw predictor column
        return _chebyshev_basis(design, float(x.min[0]), float(x.max[0]))
    x = design.terms_stats()
    # Columns of norm 1 (kernels.affine); c on W: beta = T c.
    scaling = column_scaling(x, design.intercept)
    ones = 1.0 / math.sqrt(design.n) if design.intercept else 0.0
    T = exact_map(scaling, Fraction(ones) if design.intercept else None)
    return ScaledBasis("columns", scaling.shift, scaling.scale, ones, 1, tuple(map(tuple, T)))


def _chebyshev_basis(design: Design, lo: float, hi: float) -> ScaledBasis:
    K = design.degree
    if design.intercept:
        shift, scale = lo + (hi - lo) / 2, ((hi - lo) / 2) or 1.0
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
        return ScaledBasis("chebyshev", np.array([shift]), np.array([scale]), 1.0, K, tuple(map(tuple, T)))
    # Without an intercept the basis must not contain a constant: scale only, and use z^k.
    scale = max(abs(lo), abs(hi)) or 1.0
    T = [[Fraction(0)] * K for _ in range(K)]
    for k in range(1, K + 1):
        T[k - 1][k - 1] = 1 / Fraction(scale) ** k
    return ScaledBasis("powers", np.zeros(1), np.array([scale]), 0.0, K, tuple(map(tuple, T)))
