"""Inference on the exact fit, as statsmodels' OLS results name and define it.

With n rows, p parameters (k = 1 when the design spans the constant, else 0), df_resid = n - p, s^2 = RSS / df_resid:
  t_j = b_j / se_j,  p_j = 2 P(T > |t_j|) with T ~ t(df_resid);
  conf_int_j = b_j -/+ t_{1 - alpha/2}(df_resid) se_j;
  F = ((TSS - RSS) / df_model) / s^2, df_model = p - k, TSS centered with an intercept, sum y^2
      without (statsmodels' uncentered F), f_pvalue = P(F(df_model, df_resid) > F);
  log_likelihood = -n/2 (log(2 pi) + log(RSS / n) + 1) (+ 1/2 sum log w weighted), aic = -2 llf + 2 p, bic = -2 llf + p log n.
The t and F distributions are scipy's (scipy.special's stdtr, stdtrit and fdtrc, the functions behind
scipy.stats.t and scipy.stats.f: the same values without importing scipy.stats, 0.4 s per run).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import special

from tasks.exact.fit import ExactFit
from tasks.kernels.affine import parameter_vector


@dataclass(frozen=True)
class Inference:
    """Per parameter (intercept first when there is one): t_values, p_values (p,), conf_int (p, 2);
    and the model's F test, likelihood and information criteria."""

    alpha: float
    t_values: tuple[float, ...]
    p_values: tuple[float, ...]
    conf_int: tuple[tuple[float, float], ...]
    f_statistic: float
    f_pvalue: float
    log_likelihood: float
    aic: float
    bic: float
    df_model: int
    df_resid: int


def _wald_f(fit: ExactFit, params: np.ndarray) -> tuple[float, int]:
    """(F, J) of the Wald test that every parameter but the intercept is 0 under the fit's covariance
    V, as statsmodels' wald_test computes it: b' pinv(V) b / J with J the rank of V (fewer than the
    slopes where clusters are fewer than parameters); NaN for an implicit constant or nothing to test."""
    k = int(fit.intercept is not None)
    if fit.k_constant and not k or len(params) == k:
        return math.nan, len(params) - k
    V = np.array(fit.cov_params)[k:, k:]
    b = params[k:]
    if not np.all(np.isfinite(V)):
        return math.nan, len(b)
    rank = int(np.linalg.matrix_rank(V))
    return (float(b @ np.linalg.pinv(V) @ b / rank), rank) if rank else (math.nan, len(b))


def infer(fit: ExactFit, n: int, alpha: float = 0.05) -> Inference:
    """The statistics of the exact fit of n rows at level 1 - alpha."""
    params = fit.params
    se = parameter_vector(fit.se_intercept if fit.intercept is not None else None, fit.se_coefficients)
    p, df = len(params), fit.dof
    k = fit.k_constant if fit.k_constant is not None else int(fit.intercept is not None)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = params / se
    df_model = df_num = p - k
    if fit.cov_type == "nonrobust":
        pvals = 2 * special.stdtr(df, -np.abs(t))
        half = special.stdtrit(df, 1 - alpha / 2) * se
        s2 = fit.rss / df
        f = ((fit.tss - fit.rss) / df_model) / s2 if df_model > 0 and s2 > 0 else math.nan
    else:  # statsmodels' robust results: normal t and interval, F a Wald test of the slopes
        pvals = 2 * special.ndtr(-np.abs(t))
        half = special.ndtri(1 - alpha / 2) * se
        f, df_num = _wald_f(fit, params)
    # statsmodels: the F test of clustered errors has G - 1 denominator degrees of freedom
    df_f = fit.cov_groups - 1 if fit.cov_groups is not None else df
    # statsmodels' WLS adds 1/2 sum log w (0 for OLS) to the likelihood of the whitened residuals
    llf = (-n / 2 * (math.log(2 * math.pi) + math.log(fit.rss / n) + 1) + fit.half_log_weights
           if fit.rss > 0 else math.inf)
    return Inference(
        alpha=alpha,
        t_values=tuple(map(float, t)),
        p_values=tuple(map(float, pvals)),
        conf_int=tuple((float(b - h), float(b + h)) for b, h in zip(params, half)),
        f_statistic=float(f),
        f_pvalue=float(special.fdtrc(df_num, df_f, max(f, 0.0))) if math.isfinite(f) else math.nan,
        log_likelihood=llf,
        aic=-2 * llf + 2 * p,
        bic=-2 * llf + p * math.log(n),
        df_model=df_model,
        df_resid=df,
    )
