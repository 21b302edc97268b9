"""Certified hard cases of our own: the exact fit against the exact rational least-squares solution.

The certificate is computed here, independently of tasks/: the normal equations of the float64
data are solved in exact rational arithmetic (fractions.Fraction, Gauss-Jordan), so it is the
exact least-squares solution of the numbers the program actually reads.
"""

from __future__ import annotations

import math
import warnings
from fractions import Fraction
from functools import cache

import numpy as np
import pytest

from tasks.exact.fit import IllConditionedWarning, fit_exact
from tasks.kernels.design import Design
from tasks.kernels.passes import Passes
from tests.helpers import NIST_NAMES, formula_design, lre, make_design, nist_design
from tests.test_exact_streaming import READERS, reread


def exact_rows(design) -> list[list[Fraction]]:
    """The design's rows in exact rationals: polynomial terms are exact powers of the float x."""
    rows = []
    # A formula's terms are certified as computed once in float64 (0/1 dummies are exact).
    values = design.terms if design.formula else design.features
    for features in values:
        xs = [Fraction(float(v)) for v in features]
        terms = xs if design.degree == 1 else [xs[0] ** k for k in range(1, design.degree + 1)]
        rows.append(([Fraction(1)] if design.intercept else []) + terms)
    return rows


def exact_least_squares(A: list[list[Fraction]], y: np.ndarray) -> tuple[list[Fraction], list[Fraction]]:
    """(beta, diag((A^T A)^-1)) in exact rational arithmetic."""
    b = [Fraction(float(v)) for v in y]
    p = len(A[0])
    G = [[sum(r[i] * r[j] for r in A) for j in range(p)] for i in range(p)]
    rhs = [sum(r[i] * v for r, v in zip(A, b)) for i in range(p)]
    # Gauss-Jordan on [G | rhs | I]
    M = [G[i] + [rhs[i]] + [Fraction(int(i == j)) for j in range(p)] for i in range(p)]
    for c in range(p):
        pivot = next(r for r in range(c, p) if M[r][c] != 0)
        M[c], M[pivot] = M[pivot], M[c]
        inv = 1 / M[c][c]
        M[c] = [v * inv for v in M[c]]
        for r in range(p):
            if r != c and M[r][c] != 0:
                f = M[r][c]
                M[r] = [a - f * b_ for a, b_ in zip(M[r], M[c])]
    return [M[i][p] for i in range(p)], [M[i][p + 1 + i] for i in range(p)]


def _case(name: str):
    rng = np.random.default_rng(sum(map(ord, name)))
    if name == "polynomial on a shifted interval":
        x = 1000 + np.arange(41) / 8
        y = np.round(np.sin(x) * 100 + rng.normal(0, 1, x.size), 3)
        return make_design(x, y, degree=6)
    if name == "huge offset in x":
        x = 1e9 + np.round(rng.uniform(0, 10, 60), 3)
        y = np.round(3 + 2 * (x - 1e9) + rng.normal(0, 0.1, 60), 4)
        return make_design(x, y)
    if name == "nearly collinear predictors":
        x1 = np.round(rng.uniform(0, 1, 50), 6)
        x2 = x1 + np.round(rng.uniform(-1, 1, 50), 6) * 1e-7
        y = np.round(x1 + 2 * x2 + rng.normal(0, 0.01, 50), 5)
        return make_design(np.column_stack([x1, x2]), y)
    if name == "predictors on wildly different scales":
        X = np.column_stack([rng.uniform(0, 1, 40) * 1e-8, rng.uniform(0, 1, 40) * 1e8,
                             np.round(rng.uniform(-5, 5, 40), 2)])
        y = np.round(X @ np.array([3e8, 2e-8, 1.5]) + rng.normal(0, 0.1, 40), 4)
        return make_design(X, y)
    if name == "real data with mixed units":
        year = rng.integers(1950, 2024, 80).astype(float)
        area = np.round(rng.uniform(30, 250, 80), 1)  # m^2
        rooms = rng.integers(1, 8, 80).astype(float)
        dist = np.round(rng.uniform(0.2, 40, 80), 3)  # km
        price = np.round(1000 * area + 8000 * rooms - 2500 * dist + 900 * (year - 1950)
                         + rng.normal(0, 20000, 80), 2)
        return make_design(np.column_stack([year, area, rooms, dist]), price,
                           names=("year", "area", "rooms", "distance"))
    if name in FORMULAS:
        n = 48
        g = rng.choice(["north", "south", "east", "west"], n)
        x = np.round(1000 + rng.uniform(0, 5, n), 3)
        effect = {"north": 0.0, "south": 2.5, "east": -1.0, "west": 4.0}
        y = np.round(np.array([effect[v] for v in g]) + 0.5 * (x - 1000) * (g == "east") + 3 * np.log(x)
                     + rng.normal(0, 0.1, n), 4)
        return formula_design(FORMULAS[name], {"g": g, "x": x}, y)
    if name == "polynomial without intercept":
        x = np.round(10 + rng.uniform(0, 1, 30), 4)
        y = np.round(0.5 * x**3 - 2 * x + rng.normal(0, 0.5, 30), 3)
        return make_design(x, y, degree=3, intercept=False)
    raise KeyError(name)


FORMULAS = {"formula: group effects and a slope per group": "y ~ C(g) + x + C(g):x",
            "formula: transforms without an intercept": "y ~ g + np.log(x) + I((x - 1000) ** 2) - 1"}
CASES = ["polynomial on a shifted interval", "huge offset in x", "nearly collinear predictors",
         "predictors on wildly different scales", "real data with mixed units",
         "polynomial without intercept", *FORMULAS]


@cache
def _certificate(name: str) -> tuple[list[Fraction], list[Fraction]]:
    design = _case(name)
    return exact_least_squares(exact_rows(design), design.y)


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("name", CASES)
def test_hard_case_matches_exact_rational_solution(name, reader, tmp_path):
    """It returns the exact least-squares solution of the float64 data to ~15 digits, SEs to >= 10,
    whether the rows come in one block, in blocks of 3 or from 3-row Parquet row groups."""
    design = _case(name)
    X = exact_rows(design)
    beta, inv_diag = _certificate(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IllConditionedWarning)
        fit = fit_exact(reread(design, reader, tmp_path))
    got = fit.params
    assert len(got) == design.n_params  # no term the user asked for is ever dropped
    coef_lre = min(lre(float(q), c) for q, c in zip(got, beta))
    assert coef_lre >= 14.0, f"{name}: coefficient LRE {coef_lre:.2f}"
    # Standard errors: sigma^2 = RSS / (n - p) with the exact residuals.
    rss = sum((Fraction(float(yi)) - sum(a * b for a, b in zip(row, beta))) ** 2 for row, yi in zip(X, design.y))
    sigma2 = rss / (design.n - design.n_params)
    ses = ([fit.se_intercept] if design.intercept else []) + list(fit.se_coefficients)
    for q, d in zip(ses, inv_diag):
        assert lre(q, Fraction(math.sqrt(sigma2 * d))) >= 10.0
    assert lre(fit.residual_std, Fraction(math.sqrt(sigma2))) >= 10.0





@cache
def _nist(name: str) -> tuple[Design, list[Fraction]]:
    design = nist_design(name)
    return design, exact_least_squares(exact_rows(design), design.y)[0]


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("name", NIST_NAMES)
def test_nist_fit_is_the_exact_rational_solution_of_the_parsed_data(name, reader, tmp_path):
    """On every NIST set the coefficients are the float64 rounding of the exact rational solution,
    however the rows are read (passes in 3 parts)."""
    design, beta = _nist(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IllConditionedWarning)
        fit = fit_exact(reread(design, reader, tmp_path), passes=Passes(parts=3))
    assert min(lre(float(q), c) for q, c in zip(fit.params, beta)) >= 14.5


def test_rss_is_the_exact_minimum_even_where_rounding_the_solution_moves_it():
    """On a design with condition number ~1e13, rounding the exact solution to float64 raises the
    RSS by ~1e-9 of itself; the reported RSS is the exact minimum's, to 1e-15 (the last step's
    RSS comes from RSS(beta) - 2 delta^T g + |R u|^2, not from the rounded parameters)."""
    rng = np.random.default_rng(0)
    x1 = rng.uniform(0, 1, 50)
    x2 = x1 + rng.uniform(-1, 1, 50) * 1e-13
    design = make_design(np.column_stack([x1, x2]), x1 + 2 * x2 + rng.normal(0, 0.01, 50))
    rows = exact_rows(design)
    beta, _ = exact_least_squares(rows, design.y)

    def rss(params) -> Fraction:
        return sum(((Fraction(float(v)) - sum(a * b for a, b in zip(row, params))) ** 2
                    for row, v in zip(rows, design.y)), Fraction(0))

    exact = rss(beta)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IllConditionedWarning)
        fit = fit_exact(design)
    assert abs(Fraction(fit.rss) - exact) <= 1e-15 * exact
    assert rss([Fraction(float(v)) for v in fit.params]) - exact > 1e-12 * exact
