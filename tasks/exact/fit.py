"""Exact step: the least-squares solution of the float64 data (TSQR, then double-double refinement,
both streamed), with its standard statistics."""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from prefect import get_run_logger, task

from tasks.caching import cache_key
from tasks.exact.robust import robust_cov
from tasks.kernels import rational as rq
from tasks.kernels.affine import column_scaling, exact_map, parameter_vector
from tasks.kernels.design import Design
from tasks.kernels.passes import LOCAL, Passes
from tasks.kernels.refine import refine
from tasks.kernels.tsqr import Geometry, design_geometry

# Above this condition number of the scaled design, coefficients are very sensitive to the data.
ILL_CONDITIONED = 1e8


class IllConditionedWarning(UserWarning):
    """The design is nearly rank deficient: the fit is exact for this data but fragile."""


@dataclass(frozen=True)
class ExactFit:
    """The least-squares solution and its statistics; coefficients on the data's original scale."""

    intercept: float | None
    coefficients: tuple[float, ...]
    se_intercept: float | None
    se_coefficients: tuple[float, ...]
    r_squared: float
    adj_r_squared: float
    residual_std: float
    rss: float
    # Total sum of squares: centered with an intercept, sum y^2 without (as R^2 and F use it).
    tss: float
    # statsmodels' cov_params(): s^2 (X^T X)^-1 (p, p), parameter order (intercept first).
    cov_params: tuple[tuple[float, ...], ...]
    mse: float
    dof: int
    # 2-norm condition number of the raw design [1, terms] and of its centered/scaled twin.
    condition_number: float
    condition_number_scaled: float
    # Steps of iterative refinement (double-double residuals) taken to reach float64 resolution.
    refinement_steps: int = 0
    # statsmodels' k_constant: 1 when the design spans the constant (an intercept, or an implicit
    # one: every level of a categorical without an intercept); then TSS, R^2 and F are centered.
    k_constant: int | None = None  # None: 1 with an intercept, else 0
    # statsmodels' cov_type of cov_params and the standard errors: nonrobust, or HC0-HC3.
    cov_type: str = "nonrobust"
    cov_groups: int | None = None  # clusters of cov_type "cluster": the F test has cov_groups - 1 dof
    # 1/2 sum log w of a weighted fit (--weights): statsmodels' WLS log-likelihood adds it; 0 unweighted.
    half_log_weights: float = 0.0
    # Plain-language warnings about the fit (ill-conditioning); also issued as Python warnings.
    notes: tuple[str, ...] = ()
    seconds: float = 0.0

    @property
    def params(self) -> np.ndarray:
        """(n_params,) intercept first (when there is one), then the coefficients."""
        return parameter_vector(self.intercept, self.coefficients)


def condition_numbers(design: Design, geometry: Geometry) -> tuple[float, float]:
    """2-norm condition numbers of the raw design [1, terms] and of its standardized columns.

    X = W T^-1 = Q (R T^-1), so X's singular values are those of the small matrix R T^-1; the
    standardized design is X S (intercept column 1/sqrt(n); terms centered, unit norm).
    """
    RT = rq.matmul(rq.fractions(geometry.R), rq.upper_inverse(geometry.basis.exact))
    # The terms' columns of norm 1 (kernels.affine), an intercept column 1/sqrt(n).
    ones = 1 / Fraction(math.sqrt(design.n)) if design.intercept else None
    S = exact_map(column_scaling(geometry.terms, design.intercept), ones)
    raw = np.linalg.cond(np.array(rq.to_float(RT)))
    scaled = np.linalg.cond(np.array(rq.to_float(rq.matmul(RT, S))))
    return float(raw), float(scaled)


def fit_exact(design: Design, geometry: Geometry | None = None, passes: Passes = LOCAL,
              cov_type: str = "nonrobust", cluster: str | None = None) -> ExactFit:
    """Fit the design exactly and compute standard errors, R^2 and condition numbers.

    geometry: the design's TSQR (design_geometry), when the validation pass already computed it;
    passes: how the passes over the data go over its parts; cov_type: the covariance behind the
    standard errors, statsmodels' nonrobust, HC0-HC3 or cluster (the column `cluster` of the stored
    table; exact/robust.py: one more pass).
    """
    start = time.perf_counter()
    geometry = geometry or design_geometry(design, passes=passes)
    refined = refine(design, geometry, passes)
    theta = refined.beta
    n, p = design.n, design.n_params
    rss, tss = refined.rss, refined.tss
    dof = n - p
    sigma2 = rss / dof
    M = geometry.params_map()  # T R^-1, for the covariance and (robust) its sandwich
    gram_inv = geometry.inverse_gram()
    se = np.sqrt(sigma2 * np.array([float(gram_inv[i][i]) for i in range(p)]))
    s2 = Fraction(rss) / dof  # statsmodels' cov_params() s^2 (X^T X)^-1, each entry rounded once
    cov = tuple(tuple(float(s2 * g) for g in row) for row in gram_inv)
    groups = None
    if cov_type != "nonrobust":
        robust, groups = robust_cov(design, geometry, np.array(rq.to_float(M)), np.array([float(b) for b in theta]),
                                    cov_type, passes, cluster)
        se, cov = np.sqrt(np.diag(robust)), tuple(tuple(map(float, row)) for row in robust)
    weighting = design.weighting  # a whitened design (--weights): TSS and k_constant are the raw rows'
    k_constant = int(geometry.spans_constant(n) if weighting is None else weighting.spans_constant(geometry))
    if weighting is not None:
        tss = weighting.tss(bool(k_constant))
    # NIST and statsmodels: without a constant, R^2 is the uncentered 1 - RSS / sum(y^2).
    r2 = 1.0 - rss / tss if tss > 0 else float("nan")
    adj = 1.0 - (1.0 - r2) * (n - k_constant) / dof
    cond_raw, cond_scaled = condition_numbers(design, geometry)
    notes = []
    if cond_scaled > ILL_CONDITIONED:
        notes.append(f"the design is ill-conditioned (condition number {cond_scaled:.3g} after "
                     "scaling): the coefficients are exact for this data but very sensitive to it")
    if not refined.converged:
        notes.append(f"iterative refinement stopped after {refined.steps} steps without reaching "
                     "float64 resolution: the design is nearly rank deficient and the last digits "
                     "of the coefficients may be off")
    for note in notes:
        warnings.warn(note, IllConditionedWarning, stacklevel=2)
    k = int(design.reports_intercept)
    return ExactFit(
        intercept=float(theta[0]) if k else None,
        coefficients=tuple(float(v) for v in theta[k:]),
        se_intercept=float(se[0]) if k else None,
        se_coefficients=tuple(float(v) for v in se[k:]),
        r_squared=float(r2),
        adj_r_squared=float(adj),
        residual_std=float(np.sqrt(sigma2)),
        rss=rss,
        tss=tss,
        cov_params=cov,
        mse=rss / n,
        dof=dof,
        condition_number=cond_raw,
        condition_number_scaled=cond_scaled,
        refinement_steps=refined.steps,
        k_constant=k_constant,
        cov_type=cov_type,
        cov_groups=groups,
        half_log_weights=weighting.half_log if weighting is not None else 0.0,
        notes=tuple(notes),
        seconds=time.perf_counter() - start,
    )


@task(name="fit-exact", cache_key_fn=cache_key, persist_result=True)
def fit_exact_task(design: Design, geometry: Geometry | None = None, passes: Passes = LOCAL,
                   cov_type: str = "nonrobust", cluster: str | None = None, key: str | None = None) -> ExactFit:
    """Solve the least-squares problem exactly. key: the cache key of the run's fits
    (tasks/publish/reuse.py; None: never cached)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IllConditionedWarning)  # logged below instead
        fit = fit_exact(design, geometry, passes, cov_type, cluster)
    logger = get_run_logger()
    for note in fit.notes:
        logger.warning(note)
    return fit
