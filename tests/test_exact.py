"""Oracle tests of the exact least-squares step: every number must equal an independent solve."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import statsmodels.api as sm
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tasks.exact.fit import fit_exact
from tasks.kernels.design import Design
from tests.helpers import TUTORIAL_B0, TUTORIAL_B1, TUTORIAL_X, TUTORIAL_Y, make_design, max_rel_error, tutorial_design

# --- (a) the tutorial -------------------------------------------------------------------------


def test_it_reproduces_the_tutorial_line_to_1e_12():
    """The tutorial's ten points give b0 = 0.7824239351471718 and b1 = 9.650293641652478."""
    fit = fit_exact(tutorial_design())
    assert fit.intercept == pytest.approx(TUTORIAL_B0, rel=1e-12, abs=0)
    assert fit.coefficients[0] == pytest.approx(TUTORIAL_B1, rel=1e-12, abs=0)
    assert len(fit.coefficients) == 1
    assert fit.dof == len(TUTORIAL_X) - 2


# --- (b) exact arithmetic oracle ----------------------------------------------------------------


def _solve_fractions(A: list[list[Fraction]], b: list[Fraction]) -> list[Fraction]:
    """Solve A z = b exactly by Gaussian elimination with row swaps (A square, nonsingular)."""
    n = len(A)
    M = [row[:] + [rhs] for row, rhs in zip(A, b)]
    for col in range(n):
        pivot = next(r for r in range(col, n) if M[r][col] != 0)
        M[col], M[pivot] = M[pivot], M[col]
        for r in range(n):
            if r != col and M[r][col] != 0:
                factor = M[r][col] / M[col][col]
                M[r] = [a - factor * p for a, p in zip(M[r], M[col])]
    return [M[i][n] / M[i][i] for i in range(n)]


def _exact_least_squares(columns: list[list[Fraction]], y: list[Fraction]) -> list[Fraction]:
    """theta solving the normal equations X^T X theta = X^T y in rational arithmetic."""
    gram = [[sum(a * b for a, b in zip(ci, cj)) for cj in columns] for ci in columns]
    rhs = [sum(a * b for a, b in zip(ci, y)) for ci in columns]
    return _solve_fractions(gram, rhs)


def _fraction_oracle(design: Design) -> np.ndarray:
    """Exact least-squares parameters of the float data; polynomial terms are exact powers of x."""
    y = [Fraction(float(v)) for v in design.y]
    if design.degree == 1:
        columns = [[Fraction(float(v)) for v in design.features[:, j]] for j in range(design.features.shape[1])]
    else:
        x = [Fraction(float(v)) for v in design.features[:, 0]]
        columns = [[v**k for v in x] for k in range(1, design.degree + 1)]
    if design.intercept:
        columns = [[Fraction(1)] * design.n] + columns
    return np.array([float(v) for v in _exact_least_squares(columns, y)])


def _rng_data(seed: int, n: int, p: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.uniform(-3.0, 5.0, size=(n, p))
    beta = rng.uniform(1.0, 4.0, size=p) * rng.choice([-1.0, 1.0], size=p)
    y = 2.5 + X @ beta + rng.normal(0.0, 0.5, size=n)
    return X, y


@pytest.mark.parametrize("p", [2, 3])
@pytest.mark.parametrize("intercept", [True, False])
def test_it_matches_exact_rational_normal_equations_for_several_features(p, intercept):
    """With 2-3 features the coefficients equal the rational solution of X^T X b = X^T y to 1e-12."""
    X, y = _rng_data(10 + p, n=25, p=p)
    design = make_design(X, y, intercept=intercept)
    fit = fit_exact(design)
    assert max_rel_error(fit.params, _fraction_oracle(design)) <= 1e-12


@pytest.mark.parametrize("intercept", [True, False])
def test_it_matches_exact_rational_normal_equations_for_a_cubic(intercept):
    """A degree-3 polynomial fit equals the rational solution with exact powers of x to 1e-12."""
    rng = np.random.default_rng(3)
    x = np.round(rng.uniform(-2.0, 3.0, size=30), 2)
    y = 1.5 - 2.0 * x + 0.75 * x**2 + 0.5 * x**3 + rng.normal(0.0, 0.3, size=x.size)
    design = make_design(x, y, degree=3, intercept=intercept)
    fit = fit_exact(design)
    assert len(fit.coefficients) == 3
    assert max_rel_error(fit.params, _fraction_oracle(design)) <= 1e-12


def test_the_fraction_oracle_reproduces_the_tutorial():
    """The rational oracle itself agrees with the tutorial's published line (a check on the check)."""
    oracle = _fraction_oracle(tutorial_design())
    assert max_rel_error(oracle, [TUTORIAL_B0, TUTORIAL_B1]) <= 1e-12


# --- (c) statsmodels ----------------------------------------------------------------------------


def _statsmodels_cases():
    X2, y2 = _rng_data(7, n=40, p=2)
    rng = np.random.default_rng(8)
    xc = np.sort(rng.uniform(0.0, 4.0, size=20))
    yc = 1.0 + 0.5 * xc - 1.5 * xc**2 + 0.25 * xc**3 + rng.normal(0, 0.2, size=xc.size)
    return {
        "tutorial": (TUTORIAL_X[:, None], TUTORIAL_Y, 1),
        "two-features": (X2, y2, 1),
        "cubic": (xc[:, None], yc, 3),
    }


@pytest.mark.parametrize("case", ["tutorial", "two-features", "cubic"])
@pytest.mark.parametrize("intercept", [True, False], ids=["intercept", "no-intercept"])
def test_it_matches_statsmodels_ols(case, intercept):
    """Coefficients, standard errors, R^2, adjusted R^2 and residual SD equal statsmodels OLS.

    Without an intercept statsmodels reports the uncentered R^2 = 1 - RSS / sum(y^2), and so must we.
    """
    X, y, degree = _statsmodels_cases()[case]
    design = make_design(X, y, degree=degree, intercept=intercept)
    exog = design.matrix()
    ols = sm.OLS(y, exog, hasconst=intercept).fit()
    fit = fit_exact(design)

    np.testing.assert_allclose(fit.params, ols.params, rtol=1e-9)
    se = ((fit.se_intercept,) if intercept else ()) + fit.se_coefficients
    np.testing.assert_allclose(se, ols.bse, rtol=1e-9)
    assert (fit.se_intercept is None) == (not intercept)
    assert fit.r_squared == pytest.approx(ols.rsquared, rel=1e-10)
    assert fit.adj_r_squared == pytest.approx(ols.rsquared_adj, rel=1e-10)
    assert fit.residual_std == pytest.approx(np.sqrt(ols.scale), rel=1e-10)
    assert fit.rss == pytest.approx(ols.ssr, rel=1e-10)
    assert fit.dof == ols.df_resid
    assert fit.mse == pytest.approx(ols.ssr / len(y), rel=1e-10)


def test_without_intercept_r_squared_is_uncentered():
    """With --no-intercept, R^2 is 1 - RSS / sum(y^2), not the centered one."""
    design = tutorial_design(intercept=False)
    fit = fit_exact(design)
    assert fit.intercept is None
    rss = float(np.sum((TUTORIAL_Y - TUTORIAL_X * fit.coefficients[0]) ** 2))
    assert fit.r_squared == pytest.approx(1 - rss / float(np.sum(TUTORIAL_Y**2)), rel=1e-12)


# --- (d) numpy.linalg.lstsq -----------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_it_matches_numpy_lstsq_on_random_well_conditioned_data(seed):
    """On random well-conditioned data, parameters equal numpy.linalg.lstsq's to 1e-10."""
    rng = np.random.default_rng(100 + seed)
    n, p = int(rng.integers(20, 200)), int(rng.integers(1, 6))
    X = rng.normal(size=(n, p)) * rng.uniform(0.1, 10.0, size=p) + rng.uniform(-5, 5, size=p)
    y = rng.normal(size=n) * 3 + X @ rng.normal(size=p) + 4.0
    intercept = bool(seed % 2 == 0)
    design = make_design(X, y, intercept=intercept)
    expected, *_ = np.linalg.lstsq(design.matrix(), y, rcond=None)
    fit = fit_exact(design)
    assert fit.condition_number_scaled < 1e3
    np.testing.assert_allclose(fit.params, expected, rtol=1e-10, atol=1e-12 * np.abs(expected).max())


# --- (e) properties (hypothesis) ----------------------------------------------------------------

_values = st.floats(-100.0, 100.0, allow_nan=False, allow_infinity=False, width=64)


@st.composite
def _designs(draw) -> tuple[np.ndarray, np.ndarray, bool]:
    n = draw(st.integers(5, 15))
    p = draw(st.integers(1, 2))
    X = draw(hnp.arrays(np.float64, (n, p), elements=_values))
    y = draw(hnp.arrays(np.float64, (n,), elements=_values))
    intercept = draw(st.booleans())
    return X, y, intercept


def _well_conditioned(X: np.ndarray, intercept: bool) -> bool:
    centered = X - X.mean(axis=0) if intercept else X
    norms = np.linalg.norm(centered, axis=0)
    if np.any(norms <= 1e-3 * (1 + np.abs(X).max())):
        return False
    return np.linalg.cond(centered / norms) < 1e3


def _scale(fit, X: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Natural magnitudes for the intercept and for each coefficient, for relative tolerances."""
    spread = np.maximum(X.std(axis=0), 1e-300)
    coef_scale = (np.abs(y).max() + 1.0) / spread + np.abs(fit.coefficients)
    b0_scale = np.abs(y).max() + 1.0 + float(np.sum(np.abs(fit.coefficients) * np.abs(X).max(axis=0)))
    return b0_scale, coef_scale


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(data=_designs(), c=st.floats(-1e3, 1e3, allow_nan=False))
def test_adding_a_constant_to_y_only_shifts_the_intercept(data, c):
    """y + c shifts the intercept by c and leaves every coefficient unchanged (relative 1e-9)."""
    X, y, _ = data
    assume(_well_conditioned(X, intercept=True))
    before = fit_exact(make_design(X, y))
    after = fit_exact(make_design(X, y + c))
    b0_scale, coef_scale = _scale(before, X, y)
    b0_scale += abs(c)
    coef_scale = coef_scale + abs(c) / np.maximum(X.std(axis=0), 1e-300)
    assert abs(after.intercept - (before.intercept + c)) <= 1e-9 * b0_scale
    assert np.all(np.abs(np.subtract(after.coefficients, before.coefficients)) <= 1e-9 * coef_scale)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(
    data=_designs(),
    s=st.one_of(st.floats(1e-3, 1e3), st.floats(-1e3, -1e-3)),
    column=st.integers(0, 1),
)
def test_scaling_a_feature_by_s_scales_its_coefficient_by_1_over_s(data, s, column):
    """x_j * s turns b_j into b_j / s; the intercept and the other coefficients stay (relative 1e-9)."""
    X, y, intercept = data
    j = column % X.shape[1]
    assume(_well_conditioned(X, intercept))
    Xs = X.copy()
    Xs[:, j] *= s
    before = fit_exact(make_design(X, y, intercept=intercept))
    after = fit_exact(make_design(Xs, y, intercept=intercept))
    b0_scale, coef_scale = _scale(before, X, y)
    expected = np.array(before.coefficients)
    expected[j] /= s
    tolerance = 1e-9 * coef_scale
    tolerance[j] /= abs(s)
    assert np.all(np.abs(np.array(after.coefficients) - expected) <= tolerance)
    if intercept:
        assert abs(after.intercept - before.intercept) <= 1e-9 * b0_scale
    else:
        assert after.intercept is None
