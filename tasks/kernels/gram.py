"""The design's geometry from its Gram matrix, gathered in the pass that already reads every row.

TSQR (kernels/tsqr.py) costs a pass of its own: the basis W = X T needs the column statistics
first, and a Householder fold per 4096 rows. The Gram matrix [y X]^T [y X] needs neither: it is
summed in the same pass as the statistics (BLAS, per CHUNK rows, the chunks added in double-double),
and W^T W follows from it and the statistics by the affine map of the basis, W^T y likewise; R is
then W^T W's Cholesky factor and qty = R^-T W^T y. That R is as good a preconditioner and as good
an (X^T X)^-1 as TSQR's while two things hold, and the geometry is taken from the Gram only then
(else None: the caller runs TSQR):
  1. the centring loses little: |mean| / sd <= 32 for every column (the cancellation in
     sum x z - n mean_x mean_z is about 2^-53 (mean / sd)^2 of the centred sum);
  2. W is well conditioned: cond(R) <= MAX_CONDITION, so that forming W^T W (which squares it)
     costs at most about 2^-53 MAX_CONDITION^2 relative, far below what the refinement and the
     standard errors resolve. The rank decision of an ill-conditioned design stays TSQR's.
The refinement (kernels/refine.py) still certifies the coefficients whichever R it starts from.
Straight-line terms only (the columns are the terms): formulas and polynomials keep TSQR.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from tasks.kernels import compiled
from tasks.kernels import ddarith as dd
from tasks.kernels.design import Design, scaled_basis
from tasks.kernels.table import ColumnStats
from tasks.kernels.tsqr import Geometry

CHUNK = 4096  # rows per BLAS Gram; the chunks' sums are added in double-double
MAX_CONDITION = 1e3
MAX_MEAN_RATIO = 32.0


@dataclass
class GramSums:
    """[v]^T [v] and the column sums of a table's rows v = [y, x1..xq], in double-double."""

    k: int
    gram: dd.DD = field(init=False)
    sums: dd.DD = field(init=False)
    rows: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.gram = (np.zeros((self.k, self.k)), np.zeros((self.k, self.k)))
        self.sums = (np.zeros(self.k), np.zeros(self.k))

    def update(self, block: np.ndarray) -> None:
        """Add an (m, k) block of rows (values beyond the magnitude limits overflow quietly here: the
        checks after the pass refuse them, and gram_geometry refuses what is not finite)."""
        with np.errstate(all="ignore"):
            for a in range(0, len(block), CHUNK):
                rows = block[a:a + CHUNK]
                self.gram = dd.add(self.gram, (rows.T @ rows, np.zeros((self.k, self.k))))
                self.sums = dd.add(self.sums, (rows.sum(axis=0), np.zeros(self.k)))
        self.rows += len(block)
        if self.rows >= compiled.MIN_ROWS:  # the refinement will run compiled: load it while this pass reads
            compiled.preload()


    def merge(self, other: GramSums) -> None:
        """Add the sums of the rows that follow (another part of the table's)."""
        self.gram, self.sums = dd.add(self.gram, other.gram), dd.add(self.sums, other.sums)
        self.rows += other.rows


def stats_and_gram(blocks, k: int) -> tuple[ColumnStats, GramSums]:
    """One pass over (m, k) blocks: their column statistics and Gram sums."""
    stats, gram = ColumnStats.empty(k), GramSums(k)
    for block in blocks:
        if len(block):
            stats = stats.merge(ColumnStats.of(block))
            gram.update(block)
    return stats, gram


def gram_geometry(design: Design, gram: GramSums) -> Geometry | None:
    """The design's geometry from the Gram sums of its table's rows (target first), or None where
    TSQR must decide (see the module docstring)."""
    if design.formula is not None or design.degree != 1 or design.weighting is not None or design.n == 0:
        return None
    stats, n = design.stats, design.n
    spread = np.sqrt(stats.m2 / n)
    if np.any(spread == 0) or np.max(np.abs(stats.mean) / spread) > MAX_MEAN_RATIO:
        return None
    basis = scaled_basis(design)
    if basis.kind != "columns":
        return None
    G, S = gram.gram[0] + gram.gram[1], gram.sums[0] + gram.sums[1]
    if not (np.all(np.isfinite(G)) and np.all(np.isfinite(S))):
        return None
    # Shifted sums: sum (u - a)(v - b) = G_uv - a S_v - b S_u + n a b, with a, b the basis' shifts
    # (0 for y, which TSQR also takes as it is).
    shift = np.concatenate([[0.0], basis.shift])
    C = G - np.outer(shift, S) - np.outer(S, shift) + n * np.outer(shift, shift)
    k = int(design.intercept)
    q = len(basis.scale)
    p = q + k
    WtW, Wty = np.empty((p, p)), np.empty(p)
    scale = basis.scale
    WtW[k:, k:] = C[1:, 1:] / np.outer(scale, scale)
    Wty[k:] = C[1:, 0] / scale
    if k:
        ones = basis.ones
        WtW[0, 0] = ones * ones * n
        WtW[0, k:] = WtW[k:, 0] = ones * (S[1:] - n * basis.shift) / scale
        Wty[0] = ones * S[0]
    try:
        R = np.linalg.cholesky(WtW).T
    except np.linalg.LinAlgError:
        return None
    if not np.all(np.isfinite(R)) or np.linalg.cond(R) > MAX_CONDITION:
        return None
    qty = np.linalg.solve(R.T, Wty)
    if not np.all(np.isfinite(qty)) or not math.isfinite(float(qty @ qty)):
        return None
    return Geometry(basis, R, qty, design.terms_stats(), stats.column(0))
