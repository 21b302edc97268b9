"""Validate step: the table can be fitted. Every block's cells are checked as it streams by
(tasks/ingest/cells.py); the checks that need the whole table (magnitudes, rows, constant columns,
distinct values, rank) run here on its statistics and its geometry."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from tasks.errors import UserInputError
from tasks.ingest.cells import Where
from tasks.kernels.design import Design
from tasks.kernels.gram import GramSums, gram_geometry
from tasks.kernels.passes import LOCAL, Passes
from tasks.kernels.table import ColumnStats, ParquetTable
from tasks.kernels.tsqr import Geometry, design_geometry
from tasks.wording import counted

# find(j, test) -> the first row whose value in column j passes test (a vectorized predicate), and that value.
Find = Callable[[int, Callable[[np.ndarray], np.ndarray]], tuple[int, float]]


def magnitude_limit(n: int) -> float:
    """B: the largest |value| a term (x^k) or the target may take in an n-row fit.

    Every sum the fit forms runs over n rows of values centered by a mean (|v - mean| <= 2B):
    norms, RSS, TSS, X^T r, the torch MSE. B = sqrt(MAX / (2^10 n)) makes n (2B)^2 = MAX / 2^8,
    so none overflows, with room for the loss of an untrained model; Dekker's split
    (2^27 + 1) v in the double-double arithmetic stays finite too (B < 1e153). The same bound
    from below: a column whose largest |value| is at least 1/B has squares of at least
    2^10 n / MAX, normal numbers, so its norm cannot underflow to 0.
    """
    return math.sqrt(np.finfo(np.float64).max / (2**10 * n))


def _log2(largest: float) -> float:
    """log2 of a largest |value| (-inf for an all-zero column), free of overflow and underflow."""
    return math.log2(largest) if largest > 0 else -math.inf


def _decades(log2: float) -> int:
    return round(log2 * math.log10(2))


def find_first(table: ParquetTable, j: int, test: Callable[[np.ndarray], np.ndarray]) -> tuple[int, float]:
    """The first row (0-based) whose value in column j passes test, and that value: a pass over the
    stored table, made only to name the row at fault."""
    start = 0
    for block in table.blocks():
        hits = np.flatnonzero(test(block[:, j]))
        if hits.size:
            return start + int(hits[0]), float(block[hits[0], j])
        start += len(block)
    raise LookupError(f"no row of column {table.columns[j]!r} passes the test")


def check_magnitudes(stats: ColumnStats, columns: tuple[str, ...], degree: int, source: str,
                     find: Find, where: Where) -> None:
    """Refuse values the float64 arithmetic of the fit cannot hold, with B = magnitude_limit(n):

    1. every term value |x|^k (k <= degree) and every |y| at most B;
    2. every column's largest |term| at least 1/B (zero columns are left to check_design);
    3. |y| / |x^k| (largest values), the scale of x^k's coefficient b, within [1/B, B], so that
       b^2 (in its standard error) and |b|^2 (in norms) neither overflow nor underflow; with
       rules 1 and 2 alone b could reach B^2.
    Decided on the columns' statistics (target first); find() looks up the row to name, on error only.
    """
    n = stats.count
    if n == 0:
        return  # check_design names the missing rows
    limit = magnitude_limit(n)
    bits = math.log2(limit)
    largest = stats.absmax
    y_bits = _log2(float(largest[0]))
    for j, column in enumerate(columns):
        power = 1 if j == 0 else degree
        top = _log2(float(largest[j]))
        what = f"|value|^{power} (--degree {power})" if power > 1 else "|value|"
        # |v|^power > B, compared as |v| > B^(1/power) so that the power itself cannot overflow.
        bound = 2.0 ** (bits / power)
        if largest[j] > bound:
            row, value = find(j, lambda v: np.abs(v) > bound)
            file, at = where(row)
            raise UserInputError(
                f"{file}: column {column!r}, {at}: value {value!r} is too large: "
                f"{what} must stay below {limit:.3g} for {n} rows, or sums of squares overflow "
                f"float64; rescale the column (e.g. divide it by 1e{_decades(top)})")
        # The smallest term column of |x| < 1 is the highest power.
        if math.isfinite(top) and min(top, power * top) < -bits:  # an all-zero column: check_design
            row, value = find(j, lambda v: np.abs(v) == largest[j])
            file, at = where(row)
            raise UserInputError(
                f"{file}: column {column!r}: every value is too small: the largest, {value!r} "
                f"({at}), has {what} below {1 / limit:.3g}, so squares underflow "
                f"float64; rescale the column (e.g. multiply it by 1e{-_decades(top)})")
        if j == 0 or not (math.isfinite(top) and math.isfinite(y_bits)):
            continue
        for k in sorted({1, power}):
            ratio = y_bits - k * top  # log2 of |y| / |x^k|, the scale of x^k's coefficient
            if abs(ratio) > bits:
                term = column if k == 1 else f"{column}^{k}"
                raise UserInputError(
                    f"{source}: column {columns[0]!r} is about 1e{_decades(ratio)} times column {term!r}: "
                    f"the coefficient of {term} would be about that size, beyond float64's safe "
                    f"range for its square ({1 / limit:.3g} to {limit:.3g} for {n} rows); "
                    "rescale one of the columns")


class DistinctValues:
    """Up to `needed` distinct values of one column, gathered block by block (for --degree)."""

    def __init__(self, needed: int) -> None:
        self.needed, self.seen = needed, set[float]()

    def add(self, values: np.ndarray) -> None:
        if len(self.seen) < self.needed:
            # The block's smallest distinct values: enough to reach `needed` if the block can.
            self.seen.update(np.unique(values)[: self.needed].tolist())

    @property
    def count(self) -> int:
        """The number of distinct values seen, exact below `needed`."""
        return min(len(self.seen), self.needed)


def check_design(design: Design, source: str, distinct: int, fitted: Design | None = None,
                 gram: GramSums | None = None, passes: Passes = LOCAL) -> Geometry:
    """Enough rows, a target that varies (R² needs it), no constant predictor beside the intercept, enough distinct x for the degree,
    and a design of full rank; return its geometry (one pass over its table). fitted: the design the
    fit runs on when it is not the model's own (the whitened rows of --weights): its rank and geometry.
    gram: the Gram sums of the pass that read the rows, from which the geometry comes without a pass
    where that is as accurate (kernels/gram.py); passes: where the TSQR pass's parts run."""
    names = design.term_names
    if design.n <= design.n_params:
        params = ("intercept + " if design.intercept else "") + ", ".join(names)
        raise UserInputError(
            f"{source}: {counted(design.n, 'row')}, but the model has {design.n_params} parameters ({params}); "
            f"need at least {design.n_params + 1} rows"
        )
    y = design.stats.column(slice(0, 1))
    if design.intercept and y.min[0] == y.max[0]:
        raise UserInputError(
            f"{source}: target column {design.target!r} is constant (every row is {float(y.min[0])!r}); "
            "R\u00b2 is undefined for it and there is nothing to fit"
        )
    if not design.intercept and y.min[0] == y.max[0] == 0:
        raise UserInputError(
            f"{source}: target column {design.target!r} is 0 on every row; the uncentered R\u00b2 is "
            "undefined for it and there is nothing to fit"
        )
    # A formula's terms are not its columns (a text column's statistics are placeholders): its terms'.
    x, columns = (design.terms_stats(), names) if design.formula else (design.stats.column(slice(1, None)), design.names)
    if design.intercept:
        for j, name in enumerate(columns):
            if x.min[j] == x.max[j]:
                raise UserInputError(
                    f"{source}: column {name!r} is constant (every row is {float(x.min[j])!r}); "
                    "it duplicates the intercept"
                )
    needed = design.degree + int(design.intercept)
    if design.degree > 1 and distinct < needed:
        raise UserInputError(
            f"{source}: column {design.names[0]!r} has {distinct} distinct values; "
            f"option --degree {design.degree} needs at least {needed}"
        )
    return _full_rank(fitted or design, source, gram if fitted is None else None, passes)


def _full_rank(design: Design, source: str, gram: GramSums | None = None, passes: Passes = LOCAL) -> Geometry:
    """The design's geometry (from the Gram sums, else one TSQR pass), or UserInputError naming the
    columns that make it rank deficient."""
    names = design.term_names
    geometry = (gram_geometry(design, gram) if gram is not None else None) or design_geometry(design, passes=passes)
    # W = QR with orthonormal Q: R has W's singular values and right singular vectors.
    s, vt = geometry.singular_values()
    # numpy.linalg.matrix_rank's tolerance, on the well-conditioned twin of the design.
    tol = s.max() * max(design.n, design.n_params) * np.finfo(float).eps
    if s.min() <= tol:
        null = vt[-1]
        params = (("intercept",) if design.intercept else ()) + names
        involved = [params[j] for j in np.flatnonzero(np.abs(null) > 1e-6 * np.abs(null).max())]
        if len(involved) == 1:  # the null vector is e_j: that column is 0 on every row
            raise UserInputError(f"{source}: the design is rank deficient: column {involved[0]!r} is 0 on "
                                 "every row; drop it")
        raise UserInputError(
            f"{source}: the design is rank deficient: columns {', '.join(map(repr, involved))} "
            "are linearly dependent (exactly collinear); drop one of them"
        )
    return geometry
