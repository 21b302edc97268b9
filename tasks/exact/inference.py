"""Inference on the exact fit, as statsmodels' OLS results name and define it.

With n rows, p parameters (k = 1 with an intercept, else 0), df_resid = n - p, s^2 = RSS / df_resid:
  t_j = b_j / se_j,  p_j = 2 P(T > |t_j|) with T ~ t(df_resid);
  conf_int_j = b_j -/+ t_{1 - alpha/2}(df_resid) se_j;
  F = ((TSS - RSS) / df_model) / s^2, df_model = p - k, TSS centered with an intercept, sum y^2
      without (statsmodels' uncentered F), f_pvalue = P(F(df_model, df_resid) > F);
  log_likelihood = -n/2 (log(2 pi) + log(RSS / n) + 1), aic = -2 llf + 2 p, bic = -2 llf + p log n.
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


def infer(fit: ExactFit, n: int, alpha: float = 0.05) -> Inference:
    """The statistics of the exact fit of n rows at level 1 - alpha."""
    params = fit.params
    se = parameter_vector(fit.se_intercept if fit.intercept is not None else None, fit.se_coefficients)
    p, k, df = len(params), int(fit.intercept is not None), fit.dof
    with np.errstate(divide="ignore", invalid="ignore"):
        t = params / se
    pvals = 2 * special.stdtr(df, -np.abs(t))
    half = special.stdtrit(df, 1 - alpha / 2) * se
    df_model = p - k
    s2 = fit.rss / df
    f = ((fit.tss - fit.rss) / df_model) / s2 if df_model > 0 and s2 > 0 else math.nan
    llf = -n / 2 * (math.log(2 * math.pi) + math.log(fit.rss / n) + 1) if fit.rss > 0 else math.inf
    return Inference(
        alpha=alpha,
        t_values=tuple(map(float, t)),
        p_values=tuple(map(float, pvals)),
        conf_int=tuple((float(b - h), float(b + h)) for b, h in zip(params, half)),
        f_statistic=float(f),
        f_pvalue=float(special.fdtrc(df_model, df, max(f, 0.0))) if math.isfinite(f) else math.nan,
        log_likelihood=llf,
        aic=-2 * llf + 2 * p,
        bic=-2 * llf + p * math.log(n),
        df_model=df_model,
        df_resid=df,
    )
