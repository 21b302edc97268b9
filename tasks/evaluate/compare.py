"""Compare step: how far the gradient-descent model is from the exact least-squares optimum."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial, reduce

import numpy as np
from prefect import task

from tasks.evaluate.plots import FitView, ViewFold, ViewSpec, view_spec
from tasks.exact.fit import ExactFit
from tasks.kernels import ddarith as dd
from tasks.kernels.design import Design
from tasks.kernels.passes import LOCAL, Passes
from tasks.kernels.refine import SumsFold, params_beta, residual_sum_squares, total_rss
from tasks.training.train import SGDResult
from tasks.wording import counted

RATE_POINTS = 1000  # epochs the convergence rate is fitted to


@dataclass(frozen=True)
class Comparison:
    """SGD against the exact fit, parameters compared over intercept and coefficients."""

    max_abs_diff: float
    max_rel_diff: float
    exact_mse: float
    sgd_mse: float
    excess_mse: float
    converged: bool
    rtol: float
    # Euclidean distance from the SGD parameters to the exact optimum, absolute and relative.
    distance: float
    relative_distance: float
    epochs: int
    stop_reason: str
    # Epochs at which the measured linear rate of the loss would reach rtol; None when unknown.
    epochs_needed_estimate: float | None
    # Options that make this training converge (when it did not and did not diverge).
    remedies: tuple[str, ...]
    summary: str


def estimate_epochs_needed(losses: np.ndarray, exact_mse: float, rel_diff: float, rtol: float) -> float | None:
    """Extrapolate the excess loss e_k = loss_k - exact_mse, which gradient descent shrinks linearly.

    Parameter error ~ sqrt(e), so reaching rtol from rel_diff needs e to fall by (rel_diff / rtol)^2;
    the rate is fitted to the last half of the history, at most RATE_POINTS evenly spaced epochs of
    it (the same cost for 1e2 epochs and 1e8).
    """
    n = len(losses)
    k = np.unique(np.linspace(n // 2, n - 1, RATE_POINTS).astype(np.int64)) if n else np.empty(0, np.int64)
    tail = losses[k] - exact_mse
    keep = tail > 0
    if keep.sum() < 10 or not (rel_diff > 0 and np.isfinite(rel_diff)):
        return None
    slope = np.polyfit(k[keep], np.log(tail[keep]), 1)[0]  # log e_k ~ a + slope * k
    if not slope < 0:
        return math.inf
    return float(len(losses) + 2 * math.log(rel_diff / rtol) / -slope)


def mse(design: Design, params: np.ndarray, passes: Passes = LOCAL) -> float:
    """Mean squared error of params on the design, residuals in double-double (as the exact fit's),
    in one streamed pass."""
    return _mse_or_inf(params, lambda: residual_sum_squares(design, params, passes), design.n)


def _mse_or_inf(params: np.ndarray, rss: Callable[[], float], n: int) -> float:
    """rss() / n; inf where params are not finite or a residual is beyond float64."""
    if not np.all(np.isfinite(params)):
        return math.inf
    try:
        with np.errstate(all="ignore"):
            return rss() / n
    except (ValueError, OverflowError):  # a residual beyond float64 (|params| near 1e150 and up)
        return math.inf


# Plain standardized gradient descent needs about 23 kappa^2 epochs to reach 1e-6 (kappa: the
# scaled condition number); up to this kappa the default 10000 epochs suffice.
WELL_CONDITIONED = 20.0


def remedies(sgd: SGDResult, condition_scaled: float = math.inf) -> tuple[str, ...]:
    """The options that make training converge where this run did not.

    A well-conditioned design that ran out of epochs needs only more of them.
    --precondition trains on the orthonormal twin of the design (sqrt(n) Q of its QR), where the
    MSE Hessian is 2 I (condition number 1): plain gradient descent, with or without momentum,
    then converges in a few epochs on any full-rank design. L-BFGS learns the curvature from its
    own steps on any basis.
    """
    found = []
    if sgd.stop_reason == "epochs" and condition_scaled <= WELL_CONDITIONED:
        found.append("more --epochs")
    if not sgd.precondition and sgd.optimizer in ("sgd", "momentum"):
        found.append("--precondition")
    if sgd.optimizer != "lbfgs":
        found.append("--optimizer lbfgs")
    return tuple(found)


def compare_fits(design: Design, exact: ExactFit, sgd: SGDResult, rtol: float, passes: Passes = LOCAL,
                 sgd_mse: float | None = None) -> Comparison:
    """Differences in parameters and in mean squared error (one pass over the data, unless the
    caller's pass has measured sgd_mse), and the verdict."""
    a, b = exact.params, sgd.params
    diff = np.abs(b - a)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(a != 0, diff / np.abs(a), np.where(diff == 0, 0.0, np.inf))
    max_abs = float(np.max(diff)) if np.all(np.isfinite(diff)) else math.inf
    max_rel = float(np.max(rel)) if np.all(np.isfinite(rel)) else math.inf
    sgd_mse = mse(design, b, passes) if sgd_mse is None else sgd_mse
    with np.errstate(over="ignore", invalid="ignore"):  # a diverged run's distance is inf or NaN
        distance = float(np.linalg.norm(b - a))
    converged = bool(max_rel <= rtol) and not sgd.diverged
    needed, fixes = None, ()
    if not converged and not sgd.diverged:
        needed = estimate_epochs_needed(sgd.losses, exact.mse, max_rel, rtol)
        fixes = remedies(sgd, exact.condition_number_scaled)
    if sgd.diverged:
        summary = (f"SGD diverged at epoch {sgd.epochs} (lr {sgd.lr:.3g}); "
                   "try a smaller --lr, --lr auto or --standardize")
    elif sgd.stop_reason == "timeout":
        # The verdict is about the parameters: a run cut short may still have reached the optimum.
        summary = (f"training stopped at its time limit (--train-timeout {sgd.time_limit:g} s) after "
                   f"{counted(sgd.epochs, 'epoch')}; max relative difference {max_rel:.3g} "
                   + (f"<= {rtol:.3g}: SGD reached the exact fit" if converged else f"> {rtol:.3g}"))
    elif converged:
        summary = f"SGD reached the exact fit: max relative difference {max_rel:.3g} <= {rtol:.3g}"
    else:
        summary = (f"SGD did not converge in {counted(sgd.epochs, 'epoch')}: max relative difference "
                   f"{max_rel:.3g} > {rtol:.3g}; condition number {exact.condition_number_scaled:.3g} "
                   "after scaling")
    if needed is not None:  # neither converged nor diverged
        summary += ("; the loss is no longer falling" if math.isinf(needed)
                    else f"; at its current rate it would need about {needed:.3g} epochs")
    if fixes:
        summary += f"; to reach the exact fit, run with {' or '.join(fixes)}"
    return Comparison(
        max_abs_diff=max_abs,
        max_rel_diff=max_rel,
        exact_mse=exact.mse,
        sgd_mse=sgd_mse,
        excess_mse=sgd_mse - exact.mse,
        converged=converged,
        rtol=rtol,
        distance=distance,
        relative_distance=distance / float(np.linalg.norm(a)) if np.any(a) else math.inf,
        epochs=sgd.epochs,
        stop_reason=sgd.stop_reason,
        epochs_needed_estimate=needed,
        remedies=fixes,
        summary=summary,
    )


def measure_part(spec: ViewSpec, beta: np.ndarray | None, part: Design) -> tuple[dd.DD | None, FitView]:
    """One part's sums of squares of the SGD model (beta: refine.params_beta of its params; None: not
    finite) and the plot's view of it, from one read of each block."""
    sums = None if beta is None else SumsFold(part, beta, None, False)
    view = ViewFold(spec, part)
    with np.errstate(all="ignore"):
        for features, y in part.blocks():
            terms = part.terms_of(features) if part.formula is not None else None  # once for both
            if sums is not None:
                sums.add(features, y, terms)
            view.add(features, y, terms)
    return (None if sums is None else sums.total), view.view()


def compare_and_view(design: Design, exact: ExactFit, sgd: SGDResult, rtol: float, passes: Passes = LOCAL,
                     with_view: bool = False) -> tuple[Comparison, FitView | None]:
    """compare_fits, and with_view (the design is also the plot's: no --weights) the plot's view of it
    (plots.fit_view), both from one pass over the rows. Otherwise the view is None and the plots make
    their own pass."""
    if not with_view:
        return compare_fits(design, exact, sgd, rtol, passes), None
    finite = bool(np.all(np.isfinite(sgd.params)))
    spec = view_spec(design, exact.params, sgd.params)
    parts = passes.over(partial(measure_part, spec, params_beta(sgd.params) if finite else None), design)
    view = reduce(FitView.merge, (v for _, v in parts))
    sgd_mse = _mse_or_inf(sgd.params, lambda: total_rss(reduce(dd.add, (s for s, _ in parts))), design.n)
    return compare_fits(design, exact, sgd, rtol, passes, sgd_mse), view


@task(name="compare-fits")
def compare_fits_task(design: Design, exact: ExactFit, sgd: SGDResult, rtol: float, passes: Passes = LOCAL,
                      with_view: bool = False) -> tuple[Comparison, FitView | None]:
    """Compare the SGD model with the exact fit (and make the plot's view in the same pass: with_view)."""
    return compare_and_view(design, exact, sgd, rtol, passes, with_view)
