"""The exact fit streamed: the same numbers whatever the blocks, parts and file layout.

Oracles: exact rational arithmetic (fractions.Fraction) for the double-double kernels and the
residual sum of squares, and the in-memory, one-part fit for the streamed variants.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.exact.fit import fit_exact
from tasks.kernels import ddarith as dd
from tasks.kernels.design import Design
from tasks.kernels.passes import Passes, local_map
from tasks.kernels.refine import residual_sum_squares
from tasks.kernels.table import ColumnStats, ParquetTable, stats_of
from tasks.kernels.tsqr import design_geometry
from tests.helpers import make_design

# How a test reads the same data: in one block, in blocks of 3 rows (in 3 parts), or from a
# Parquet file written in row groups of 3 rows.
READERS = ["one block", "blocks of 3", "parquet row groups of 3"]


def reread(design: Design, reader: str, folder: Path) -> Design:
    """The same in-memory design read as `reader` says."""
    if reader == "one block":
        return design
    data = design.table.data
    if reader == "blocks of 3":
        return replace(Design.from_arrays(data[:, 1:], data[:, 0], design.names, design.target, design.degree,
                                          design.intercept, block_rows=3), formula=design.formula)
    path = folder / "data.parquet"
    columns = design.table.columns
    pq.write_table(pa.table({c: data[:, j] for j, c in enumerate(columns)}), path, row_group_size=3)
    table = ParquetTable(str(path), columns, len(data), ColumnStats.empty(len(columns)), block_rows=3)
    # Statistics merged from 3-row blocks, as the ingest pass computes them.
    table = replace(table, stats=stats_of(table.blocks(), len(columns)))
    return Design(table, design.names, design.target, design.degree, design.intercept, design.formula)


def _exact_rss(design: Design, params: Sequence[float]) -> Fraction:
    """sum (y - X params)^2 in rational arithmetic; polynomial terms are exact powers of x."""
    total = Fraction(0)
    for features, y in zip(design.features, design.y):
        xs = [Fraction(float(v)) for v in features]
        terms = xs if design.degree == 1 else [xs[0] ** k for k in range(1, design.degree + 1)]
        row = ([Fraction(1)] if design.intercept else []) + terms
        total += (Fraction(float(y)) - sum(a * Fraction(float(b)) for a, b in zip(row, params))) ** 2
    return total


def _counting(calls: list[int]) -> Callable:
    """A mapper that runs each pass locally and records how many parts it got."""
    def mapper(fn: Callable[[Any], Any], parts: Sequence[Any]) -> list[Any]:
        calls.append(len(parts))
        return local_map(fn, parts)
    return mapper


def _cancelling(rng: np.random.Generator, k: int, m: int) -> np.ndarray:
    """(k, m) values over 30 decades whose sums cancel: a float64 sum of them keeps no digit."""
    a = rng.normal(size=(k, m)) * 10.0 ** rng.uniform(-15, 15, size=(k, m))
    a[-1] = -a[:-1].sum(axis=0)  # the float64 sum is off by ~1e-16 of the largest term
    a[0] += rng.normal(size=m) * 1e-20
    return a


def _error(hi: np.ndarray, lo: np.ndarray, terms: np.ndarray) -> float:
    """The largest |(hi + lo) - exact sum| over the rows of terms, relative to sum |term|."""
    return max(float(abs(Fraction(float(h)) + Fraction(float(l_)) - sum(map(Fraction, row.tolist())))
                     / Fraction(float(np.abs(row).sum())))
               for h, l_, row in zip(hi, lo, terms))


def test_double_double_sums_are_exact_to_32_digits_whatever_the_cancellation():
    """sum_rows (Sum2, short sums) and exact_sums (ExtractScalar, long ones) are off by less than
    2^-96 of the sum of |terms|; a float64 sum of these keeps no digit at all."""
    rng = np.random.default_rng(5)
    a = _cancelling(rng, 17, 40)
    assert _error(*dd.sum_rows(a.copy()), a.T) < 2.0**-96
    b = _cancelling(rng, 300, 6).T.copy()
    assert _error(*dd.exact_sums(b.copy(), 1), b) < 2.0**-96
    assert _error(b.sum(axis=1), np.zeros(6), b) > 2.0**-60


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("degree", [1, 3])
def test_residual_sum_squares_is_the_rational_rss_of_the_params(reader, degree, tmp_path):
    """The double-double RSS of float64 params equals the rational one to 1e-15, however it is read
    (in 3 parts)."""
    rng = np.random.default_rng(degree)
    n, p = 40, (3 if degree == 1 else 1)
    X = rng.uniform(-2, 5, size=(n, p)) + (1000 if degree == 1 else 0)
    y = np.abs(X.sum(axis=1)) ** 1.5 / 30 + rng.normal(size=n)
    design = reread(make_design(X, y, degree=degree), reader, tmp_path)
    for params in (design_geometry(design).initial_solution(), np.arange(1.0, design.n_params + 1)):
        got = residual_sum_squares(design, params, Passes(parts=3))
        expected = _exact_rss(design, params)
        assert abs(Fraction(got) - expected) <= 1e-15 * expected


@pytest.mark.parametrize("reader", READERS[1:])
@pytest.mark.parametrize("degree", [1, 4])
def test_streamed_fit_equals_the_in_memory_fit(reader, degree, tmp_path):
    """Blocks of 3 rows in 3 parts, or a Parquet file in row groups of 3, give the one-block fit's
    numbers to float64 rounding (the merges are stable; only their rounding differs)."""
    rng = np.random.default_rng(11)
    n = 61
    X = rng.normal(size=(n, 3)) * [1, 10, 0.1] + [5, -20, 300] if degree == 1 else rng.uniform(1, 3, size=n)
    y = (X @ [1.5, -0.2, 3.0] if degree == 1 else 2 * X**3 - X) + rng.normal(size=n)
    whole = fit_exact(make_design(X, y, degree=degree))
    streamed = fit_exact(reread(make_design(X, y, degree=degree), reader, tmp_path), passes=Passes(parts=3))
    np.testing.assert_allclose(streamed.params, whole.params, rtol=1e-14)
    se = lambda f: ((f.se_intercept,) + f.se_coefficients)  # noqa: E731
    np.testing.assert_allclose(se(streamed), se(whole), rtol=1e-12)
    for name in ("rss", "r_squared", "residual_std"):
        assert getattr(streamed, name) == pytest.approx(getattr(whole, name), rel=1e-13)


def test_a_straight_line_fit_costs_one_tsqr_pass_and_one_double_double_pass():
    """Each pass maps over the requested parts; with the geometry given, only the refinement's
    single pass is left (the last step's RSS comes from the algebra, not from another pass)."""
    rng = np.random.default_rng(2)
    X = rng.normal(size=(500, 4)) + [0, 1, 2, 3]
    design = Design.from_arrays(X, X @ [1.0, 2.0, -1.0, 0.5] + rng.normal(size=500), ("a", "b", "c", "d"),
                                block_rows=64)
    calls: list[int] = []
    fit = fit_exact(design, passes=Passes(_counting(calls), 3))
    assert calls == [3, 3]  # the TSQR pass, then one refinement pass
    calls.clear()
    again = fit_exact(design, design_geometry(design), Passes(_counting(calls), 3))
    assert calls == [3]
    assert again.params.tolist() == fit.params.tolist()
    # The RSS of the last step (algebra) is the rational RSS of the fit's solution.
    assert fit.rss == pytest.approx(float(_exact_rss(design, fit.params)), rel=1e-14)


def test_a_perfect_fit_recomputes_its_rss_and_reports_zero():
    """y exactly on a line: the last step's RSS cannot come from the algebra (it would be all
    rounding), so one more pass computes it: 0 to double-double precision, R^2 = 1."""
    x = np.arange(1.0, 30.0)
    fit = fit_exact(make_design(x, 3.0 + 0.5 * x))
    assert fit.params.tolist() == [3.0, 0.5]
    assert fit.rss <= 1e-25 and fit.r_squared == 1.0 and math.isfinite(fit.residual_std)
