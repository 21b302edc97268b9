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
from functools import partial

import numpy as np

from tasks.kernels.design import Design, ScaledBasis, scaled_basis
from tasks.kernels.passes import Mapper, local_map
from tasks.kernels.table import ColumnStats


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

    def singular_values(self) -> tuple[np.ndarray, np.ndarray]:
        """W's singular values (descending) and right singular vectors (rows of vt)."""
        _, s, vt = np.linalg.svd(self.R)
        return s, vt


def fold_r(R: np.ndarray | None, rows: np.ndarray) -> np.ndarray:
    """R of [R; rows]: (min(p, r), p), upper triangular."""
    stacked = rows if R is None else np.vstack([R, rows])
    return np.linalg.qr(stacked, mode="r")


def partial_geometry(basis: ScaledBasis, design: Design) -> tuple[np.ndarray | None, ColumnStats]:
    """One part's R of [W y] (None for no rows) and its terms' statistics."""
    R = None
    terms = ColumnStats.empty(len(design.term_names))
    for features, y in design.blocks():
        if not len(y):
            continue
        R = fold_r(R, np.column_stack([basis.apply(features), y]))
        terms = terms.merge(ColumnStats.of(design.terms_of(features)))
    return R, terms


def design_geometry(design: Design, basis: ScaledBasis | None = None, mapper: Mapper = local_map,
                    parts: int = 1) -> Geometry:
    """One pass over the design's blocks (part by part through mapper, then merged): R and Q^T y
    of its basis, and the terms' statistics."""
    basis = basis or scaled_basis(design)
    p = design.n_params
    R, terms = None, ColumnStats.empty(len(design.term_names))
    for part_R, part_terms in mapper(partial(partial_geometry, basis), design.split(parts)):
        if part_R is not None:
            R = fold_r(R, part_R)  # the R of stacked R factors is the R of the stacked rows
        terms = terms.merge(part_terms)
    full = np.zeros((p + 1, p + 1))
    if R is not None:
        full[: R.shape[0]] = R
    return Geometry(basis, full[:p, :p], full[:p, p], terms, design.stats.column(0))
