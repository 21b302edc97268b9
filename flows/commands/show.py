"""`linreg show [VERSION]`: one version as a plain-text summary, statsmodels-style."""

from __future__ import annotations

from pathlib import Path

from tasks.errors import UserInputError
from tasks.publish.reader import VersionDocs, read_version
from tasks.wording import counted


def _num(value: object, spec: str = ".6g") -> str:
    return format(value, spec) if isinstance(value, (int, float)) and not isinstance(value, bool) else "—"


def sound_version(path: Path) -> VersionDocs:
    """The documents of the version folder at path; UserInputError when it is damaged."""
    docs = read_version(path)
    if docs.damage:
        raise UserInputError(f"{path}: damaged version ({docs.damage})")
    return docs


def summary_text(path: Path) -> str:
    """The summary of the version folder at path (it must be sound: its hashes match)."""
    docs = sound_version(path)
    coef, comp, manifest = docs.coefficients, docs.comparison, docs.manifest
    exact, sgd, data = coef.exact, coef.sgd, manifest.data
    names = coef.parameter_names()
    alpha = exact["alpha"]
    lo, hi = f"[{alpha / 2:g}", f"{1 - alpha / 2:g}]"
    width = max(len(n) for n in names) + 2
    cov_type = exact.get("cov_type") or "nonrobust"
    stat = "t" if cov_type == "nonrobust" else "z"  # statsmodels' robust results use the normal
    head = f"{'':<{width}}{'coef':>14}{'std err':>12}{stat:>10}{f'P>|{stat}|':>10}{lo:>14}{hi:>14}"
    rows = []
    for name, b, se, t, p, ci in zip(names, *(coef.values(block) for block in (
            exact, exact["std_errors"], exact["t_values"], exact["p_values"], exact["conf_int"]))):
        rows.append(f"{name:<{width}}{_num(b, '14.6g')}{_num(se, '12.4g')}{_num(t, '10.3f')}{_num(p, '10.3g')}"
                    f"{_num(ci[0], '14.6g')}{_num(ci[1], '14.6g')}")
    sgd_params = ", ".join(f"{n} {_num(v, '.10g')}" for n, v in zip(names, coef.values(sgd)))
    drift = coef.drift
    lines = [
        f"version   {manifest.version or path.name}  (created {manifest.created_at or '?'})",
        f"data      {data.source or '?'}  ({counted(data.rows or 0, 'row')}, sha256 {(data.sha256 or '')[:12]})",
        f"model     {coef.model_formula()}: exact "
        + (f"weighted least squares (weights {coef.weights})" if coef.weights else "least squares"),
        "",
        head,
        *rows,
        "",
        f"{coef.r_squared_label()} {_num(exact.get('r_squared'))}   adj. R² {_num(exact.get('adj_r_squared'))}   "
        f"F {_num(exact.get('f_statistic'))} (p {_num(exact.get('f_pvalue'), '.3g')})",
        f"log-likelihood {_num(exact.get('log_likelihood'))}   AIC {_num(exact.get('aic'))}   "
        f"BIC {_num(exact.get('bic'))}",
        f"residual SD {_num(exact.get('residual_std'))} on {exact['df_resid']} degrees of "
        f"freedom; condition number {_num(exact.get('condition_number_scaled'), '.3g')} after scaling",
        *([f"covariance {cov_type}" + (f" ({counted(exact['cov_groups'], 'cluster')})" if exact.get("cov_groups")
                                       else "") + ": z, p and intervals from the normal, F a Wald test "
           "(statsmodels' robust results)"] if cov_type != "nonrobust" else []),
        *([f"rows      {counted(coef.dropped_rows, 'row')} with a missing value left out (--missing drop)"]
          if coef.dropped_rows else []),
        "",
        f"SGD (torch {sgd.get('optimizer')}, lr {_num(sgd.get('lr'), '.3g')}, {counted(sgd.get('epochs', 0), 'epoch')}, "
        f"stop {sgd.get('stop_reason')}): {sgd_params}",
        f"verdict   {comp.summary or '?'}",
        "drift     " + (f"max relative change {_num(drift.max_rel_change, '.3g')} since {drift.since}"
                         if drift is not None and drift.since else "first version of this model"),
    ]
    return "\n".join(lines)


# The end-of-run summary lists at most this many exact coefficients (`linreg show` has them all).
SUMMARY_TERMS = 8


def run_summary(path: Path) -> str:
    """What a person reads first after `linreg run` (on stderr): the model, the exact coefficients,
    R², the verdict, and a WARNING with the remedy when SGD did not converge."""
    docs = sound_version(path)
    coef, comp, manifest = docs.coefficients, docs.comparison, docs.manifest
    exact, sgd = coef.exact, coef.sgd
    names, values = coef.parameters("exact")
    shown = ", ".join(f"{n} {_num(v, '.10g')}" for n, v in list(zip(names, values))[:SUMMARY_TERMS])
    more = len(names) - SUMMARY_TERMS
    lines = [
        f"linreg: {coef.model_formula()} on {counted(manifest.data.rows or 0, 'row')}",
        f"  exact least squares: {shown}" + (f" (and {more} more: linreg show)" if more > 0 else ""),
        f"  {coef.r_squared_label()} {_num(exact.get('r_squared'), '.6g')}, residual SD "
        f"{_num(exact.get('residual_std'), '.6g')}",
        f"  torch {sgd.get('optimizer')}: {comp.summary or '?'}",
    ]
    if not comp.converged:
        epochs = counted(sgd.get("epochs", 0), "epoch")
        why = {"epochs": f"its {epochs} ran out", "diverged": f"it diverged after {epochs}",
               "timeout": f"its time limit ended it after {epochs}",
               "tol": f"it stopped at its rounding floor after {epochs}"}.get(sgd.get("stop_reason"), epochs)
        lines.append(f"linreg: WARNING: SGD did not reach the exact fit ({why})"
                     + (f"; run with {' or '.join(comp.remedies)}" if comp.remedies else ""))
    lines.append(f"  version: {path}")
    return "\n".join(lines)
