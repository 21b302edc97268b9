"""The comparison step: every field recomputed independently from the two parameter vectors."""

from __future__ import annotations

import dataclasses
import math
import pickle
from fractions import Fraction

import numpy as np
import pytest

from tasks.evaluate.compare import WELL_CONDITIONED, compare_and_view, compare_fits, estimate_epochs_needed
from tasks.evaluate.plots import fit_view
from tasks.exact.fit import fit_exact
from tasks.kernels.passes import Passes
from tasks.training.train import SGDResult
from tests.helpers import TUTORIAL_X, TUTORIAL_Y, formula_design, make_design, tutorial_design

pytestmark = pytest.mark.numeric  # run again under torch's other CPU kernels (make test)


def _sgd(params, *, intercept=True, stop_reason="epochs", epochs=100, losses=None, time_limit=None,
         optimizer="sgd", precondition=False) -> SGDResult:
    params = [float(v) for v in params]
    return SGDResult(
        intercept=params[0] if intercept else None,
        coefficients=tuple(params[1:] if intercept else params),
        epochs=epochs,
        final_loss=1.0,
        stop_reason=stop_reason,
        optimizer=optimizer,
        lr=0.1,
        momentum=None,
        losses=np.linspace(10.0, 3.0, epochs) if losses is None else losses,
        device="cpu",
        dtype="float64",
        time_limit=time_limit,
        precondition=precondition,
    )


@pytest.mark.parametrize("intercept", [True, False])
def test_fields_match_an_independent_computation(intercept):
    """max_abs_diff, max_rel_diff, exact_mse, sgd_mse and excess_mse = sgd_mse - exact_mse."""
    design = tutorial_design(intercept=intercept)
    exact = fit_exact(design)
    truth = exact.params
    sgd_params = truth * (1 + np.array([3e-3, -1e-3])[: truth.size])
    comparison = compare_fits(design, exact, _sgd(sgd_params, intercept=intercept), rtol=1e-6)

    X = np.column_stack([np.ones_like(TUTORIAL_X), TUTORIAL_X]) if intercept else TUTORIAL_X[:, None]
    exact_mse = np.mean((TUTORIAL_Y - X @ truth) ** 2)
    sgd_mse = np.mean((TUTORIAL_Y - X @ sgd_params) ** 2)
    diff = np.abs(sgd_params - truth)
    assert comparison.max_abs_diff == pytest.approx(diff.max(), rel=1e-12)
    assert comparison.max_rel_diff == pytest.approx((diff / np.abs(truth)).max(), rel=1e-12)
    assert comparison.exact_mse == pytest.approx(exact_mse, rel=1e-12)
    assert comparison.sgd_mse == pytest.approx(sgd_mse, rel=1e-12)
    assert comparison.excess_mse == pytest.approx(sgd_mse - exact_mse, rel=1e-6)
    assert comparison.excess_mse == comparison.sgd_mse - comparison.exact_mse
    assert comparison.excess_mse > 0  # the exact fit is the least-squares optimum
    assert comparison.distance == pytest.approx(np.linalg.norm(sgd_params - truth), rel=1e-12)
    assert comparison.rtol == 1e-6
    assert not comparison.converged


def test_the_verdict_is_max_rel_diff_against_rtol():
    """converged is True exactly when every parameter is within rtol, relatively, of the exact one."""
    design = tutorial_design()
    exact = fit_exact(design)
    near = _sgd(exact.params * (1 + 5e-5))
    assert compare_fits(design, exact, near, rtol=1e-4).converged
    assert not compare_fits(design, exact, near, rtol=1e-5).converged
    identical = compare_fits(design, exact, _sgd(exact.params), rtol=1e-12)
    assert identical.converged
    assert identical.max_abs_diff == 0 and identical.max_rel_diff == 0
    assert identical.excess_mse == pytest.approx(0, abs=1e-12)


def test_a_diverged_run_is_never_converged():
    """A run that diverged is not converged, whatever its last parameters were."""
    design = tutorial_design()
    exact = fit_exact(design)
    comparison = compare_fits(design, exact, _sgd(exact.params, stop_reason="diverged"), rtol=0.5)
    assert not comparison.converged
    assert comparison.stop_reason == "diverged"
    assert "diverged" in comparison.summary


def test_non_finite_parameters_give_infinite_differences_not_a_crash():
    """A blown-up run with inf/nan parameters compares as infinitely far."""
    design = tutorial_design()
    exact = fit_exact(design)
    losses = np.array([10.0, 1e5, np.inf])
    comparison = compare_fits(
        design, exact, _sgd([np.nan, np.inf], stop_reason="diverged", epochs=3, losses=losses), rtol=1e-6
    )
    assert comparison.max_abs_diff == math.inf
    assert comparison.max_rel_diff == math.inf
    assert not comparison.converged


def test_a_zero_exact_parameter_gives_inf_relative_difference_unless_equal():
    """Relative difference against an exact 0 is inf (or 0 when SGD also has exactly 0)."""
    x = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])
    y = np.array([1.0, -1.0, 0.0, -1.0, 1.0])  # symmetric: the exact slope is 0
    design = make_design(x, y)
    exact = fit_exact(design)
    assert exact.coefficients[0] == pytest.approx(0, abs=1e-15)
    exact_params = np.array([exact.intercept, 0.0])
    exact = dataclasses.replace(exact, coefficients=(0.0,))  # exactly zero, not 1e-17
    assert compare_fits(design, exact, _sgd(exact_params + [0, 1e-9]), rtol=1e-3).max_rel_diff == math.inf
    assert compare_fits(design, exact, _sgd(exact_params), rtol=1e-3).max_rel_diff == 0


def test_a_run_stopped_by_its_time_limit_says_so_and_is_judged_by_its_parameters():
    """stop_reason "timeout": the summary names the limit, the epochs and max_rel_diff against rtol;
    it is converged exactly when the parameters are within rtol."""
    design = tutorial_design()
    exact = fit_exact(design)
    far = exact.params * (1 + np.array([2e-3, -1e-3]))
    comparison = compare_fits(design, exact, _sgd(far, stop_reason="timeout", epochs=1234, time_limit=0.5),
                              rtol=1e-6)
    assert not comparison.converged
    assert comparison.stop_reason == "timeout"
    assert comparison.summary.startswith(
        "training stopped at its time limit (--train-timeout 0.5 s) after 1234 epochs; "
        f"max relative difference {2e-3:.3g} > {1e-6:.3g}"), comparison.summary
    assert "converge" not in comparison.summary

    near = compare_fits(design, exact, _sgd(exact.params * (1 + 1e-9), stop_reason="timeout", epochs=77,
                                            time_limit=30.0), rtol=1e-6)
    assert near.converged
    assert near.summary == ("training stopped at its time limit (--train-timeout 30 s) after 77 epochs; "
                            f"max relative difference {near.max_rel_diff:.3g} <= {1e-6:.3g}: "
                            "SGD reached the exact fit")


def _pickling_map(fn, parts):
    """A mapper that ships the function and each part through pickle, as a Dask worker gets them."""
    fn = pickle.loads(pickle.dumps(fn))
    return [fn(pickle.loads(pickle.dumps(part))) for part in parts]


@pytest.mark.parametrize("degree", [1, 3])
def test_sgd_mse_is_the_exact_mean_of_squared_residuals_in_any_blocks_and_parts(degree):
    """sgd_mse equals sum (y - X b)^2 / n computed in exact rationals, to float64 rounding, whether
    the design is read in one block or in blocks of 3 rows over 3 pickled parts."""
    x = TUTORIAL_X + 1000.0  # far from 0: powers and residuals cancel heavily in float64
    design = make_design(x, TUTORIAL_Y, degree=degree)
    exact = fit_exact(design)
    params = exact.params * (1 + 1e-7)
    rows = [[Fraction(1)] + [Fraction(float(v)) ** k for k in range(1, degree + 1)] for v in x]
    truth = sum((Fraction(float(t)) - sum(a * Fraction(float(b)) for a, b in zip(row, params))) ** 2
                for row, t in zip(rows, TUTORIAL_Y)) / len(x)
    small = dataclasses.replace(design, table=dataclasses.replace(design.table, block_rows=3))
    for d, mapper, parts in ((design, None, 1), (small, _pickling_map, 3)):
        kwargs = {} if mapper is None else {"passes": Passes(mapper, parts)}
        comparison = compare_fits(d, exact, _sgd(params), rtol=1e-6, **kwargs)
        assert abs(comparison.sgd_mse - float(truth)) <= 2 * 2.0**-52 * float(truth)


@pytest.mark.parametrize(("optimizer", "precondition", "fixes"), [
    ("sgd", False, ("--precondition", "--optimizer lbfgs")),
    ("momentum", False, ("--precondition", "--optimizer lbfgs")),
    ("sgd", True, ("--optimizer lbfgs",)),
    ("adam", False, ("--optimizer lbfgs",)),
    ("lbfgs", False, ()),
])
@pytest.mark.parametrize("stop_reason", ["tol", "epochs"])
def test_a_run_that_did_not_converge_names_the_options_that_would(optimizer, precondition, fixes, stop_reason):
    """Neither converged nor diverged: --precondition for plain sgd and momentum on the original
    basis, --optimizer lbfgs for any other optimizer; in comparison.remedies and in the summary.
    A well-conditioned design (the tutorial's: condition number 1 after scaling) that ran out of
    epochs is first told to run more of them."""
    design = tutorial_design()
    exact = fit_exact(design)
    far = _sgd(exact.params * (1 + 1e-3), optimizer=optimizer, precondition=precondition, stop_reason=stop_reason)
    comparison = compare_fits(design, exact, far, rtol=1e-6)
    assert not comparison.converged
    fixes = (("more --epochs",) if stop_reason == "epochs" else ()) + fixes
    assert comparison.remedies == fixes
    tail = f"; to reach the exact fit, run with {' or '.join(fixes)}"
    assert comparison.summary.endswith(tail) if fixes else "to reach the exact fit" not in comparison.summary


def test_an_ill_conditioned_design_out_of_epochs_is_not_told_to_run_more():
    """More epochs help only where gradient descent converges fast enough (scaled condition number
    up to WELL_CONDITIONED): on a nearly collinear design the remedies are the options alone."""
    rng = np.random.default_rng(0)
    x1 = rng.normal(size=50)
    X = np.column_stack([x1, x1 + 1e-3 * rng.normal(size=50)])
    design = make_design(X, X @ [1.0, 2.0] + rng.normal(size=50))
    exact = fit_exact(design)
    assert exact.condition_number_scaled > WELL_CONDITIONED
    comparison = compare_fits(design, exact, _sgd(exact.params * (1 + 1e-3)), rtol=1e-6)
    assert comparison.remedies == ("--precondition", "--optimizer lbfgs")


@pytest.mark.parametrize("stop_reason", ["diverged", "epochs"])
def test_runs_that_converged_or_diverged_get_no_remedy(stop_reason):
    """A converged run needs no option; a diverged one gets the step-size advice instead."""
    design = tutorial_design()
    exact = fit_exact(design)
    params = exact.params * (1 + 1e-3) if stop_reason == "diverged" else exact.params
    comparison = compare_fits(design, exact, _sgd(params, stop_reason=stop_reason), rtol=1e-6)
    assert comparison.remedies == ()
    assert "to reach the exact fit" not in comparison.summary


@pytest.mark.parametrize("epochs", [100, 10**6])
def test_the_epochs_needed_follow_the_measured_linear_rate(epochs):
    """Excess loss e_k = c r^k: reaching rtol from rel_diff takes 2 log(rel_diff / rtol) / -log r
    more epochs, from 1e2 or 1e6 recorded epochs alike (the rate is fitted to a bounded sample)."""
    r = 0.5 ** (40 / epochs)  # the excess falls by 2^-40 over the run
    losses = 2.0 + 1e3 * r ** np.arange(epochs)
    needed = estimate_epochs_needed(losses, 2.0, rel_diff=1e-2, rtol=1e-8)
    assert needed == pytest.approx(epochs + 2 * math.log(1e-2 / 1e-8) / -math.log(r), rel=1e-6)
    assert estimate_epochs_needed(np.full(epochs, 3.0), 2.0, 1e-2, 1e-8) == math.inf  # not falling


def _fused_cases():
    rng = np.random.default_rng(11)
    n = 70_000  # past compiled.MIN_ROWS: the straight-line part sums run on the compiled kernels where numba runs
    X = rng.normal(size=(n, 3)) * [1.0, 5.0, 0.2] + [3.0, -1.0, 40.0]
    y = 1.5 + X @ [2.0, -0.3, 7.0] + rng.normal(size=n)
    g = rng.choice(np.array(["a", "b", "c"]), size=300)
    x = rng.normal(size=300)
    return {
        "straight-line": make_design(X, y),
        "one feature": make_design(X[:500, 0], y[:500]),
        "polynomial": make_design(X[:500, 0], y[:500], degree=3),
        "formula": formula_design("y ~ x + C(g)", {"x": x, "g": g}, 1.0 + 2.0 * x + (g == "b") + rng.normal(size=300),
                                  block_rows=37),
    }


@pytest.mark.parametrize("case", ["straight-line", "one feature", "polynomial", "formula"])
@pytest.mark.parametrize("parts", [1, 3])
def test_one_pass_comparison_and_view_equal_the_two_passes(case, parts):
    """compare_and_view's single pass gives the comparison compare_fits gives and the view
    plots.fit_view gives, field for field, on straight-line, polynomial and formula designs."""
    design = _fused_cases()[case]
    passes = Passes(parts=parts)
    exact = fit_exact(design)
    sgd = _sgd(exact.params * (1 + 1e-3))
    comparison, view = compare_and_view(design, exact, sgd, 1e-6, passes, with_view=True)
    assert comparison == compare_fits(design, exact, sgd, 1e-6, passes)
    expected = fit_view(design, exact.params, sgd.params, passes)
    assert view.n == design.n and view.outside == expected.outside
    np.testing.assert_array_equal(view.counts, expected.counts)
    np.testing.assert_array_equal(view.sums, expected.sums)
    assert (view.points is None) == (expected.points is None)
    if view.points is not None:
        np.testing.assert_array_equal(view.points, expected.points)
    # without the view (--weights: the plot's rows are not the fitted ones) no view is made
    assert compare_and_view(design, exact, sgd, 1e-6, passes) == (comparison, None)


def test_one_pass_comparison_of_a_diverged_model_still_makes_the_view():
    design = _fused_cases()["one feature"]
    exact = fit_exact(design)
    comparison, view = compare_and_view(design, exact, _sgd([np.nan, np.inf], stop_reason="diverged"), 1e-6,
                                        with_view=True)
    assert comparison.sgd_mse == math.inf and not comparison.converged
    assert view.n == design.n

