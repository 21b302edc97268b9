"""The documents of a version (coefficients, comparison, design, manifest, summary), built in memory."""

from __future__ import annotations

import dataclasses
import io
import platform
import sys
from fractions import Fraction
from importlib import metadata

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from prefect import task

from tasks.evaluate.compare import Comparison
from tasks.exact.fit import ExactFit
from tasks.exact.inference import infer
from tasks.kernels import rational as rq
from tasks.kernels.design import Design
from tasks.kernels.tsqr import Geometry
from tasks.publish.reader import nulled
from tasks.publish.schema import (COEFFICIENTS, COMPARISON, DESIGN, LOSS_HISTORY, SGD_MODEL, BasisRecord, Coefficients,
                                  DataRecord, DesignRecord, Manifest, tagged)
from tasks.training.model_file import sgd_model_bytes
from tasks.training.train import SGDResult

PACKAGES = ("linreg-flow", "prefect", "torch", "numpy", "pandas", "pyarrow", "matplotlib", "pydantic", "scipy", "threadpoolctl")


def _split(values: tuple, intercept: bool) -> dict:
    """{"intercept": first or None, "coefficients": the rest}, as coefficients.json nests parameters."""
    values = [list(v) if isinstance(v, tuple) else v for v in values]
    return {"intercept": values[0] if intercept else None, "coefficients": values[int(intercept):]}


def coefficients_doc(design: Design, exact: ExactFit, sgd: SGDResult, comparison: Comparison,
                     alpha: float = 0.05, dropped: int = 0, weights: str | None = None) -> dict:
    """coefficients.json: the contract's fields, exact (with statsmodels' inference at level
    1 - alpha, and cov_params) and SGD side by side; dropped: the rows --missing drop left out;
    weights: the weights' column of a weighted fit."""
    stats = infer(exact, design.n, alpha)
    k = design.intercept
    exact_block = {
        "intercept": exact.intercept,
        "coefficients": list(exact.coefficients),
        "std_errors": {"intercept": exact.se_intercept, "coefficients": list(exact.se_coefficients)},
        "r_squared": exact.r_squared,
        "adj_r_squared": exact.adj_r_squared,
        "residual_std": exact.residual_std,
        "rss": exact.rss,
        "dof": exact.dof,
        "condition_number": exact.condition_number,
        "condition_number_scaled": exact.condition_number_scaled,
        "t_values": _split(stats.t_values, k),
        "p_values": _split(stats.p_values, k),
        "conf_int": _split(stats.conf_int, k),
        "alpha": stats.alpha,
        "cov_type": exact.cov_type,
        "k_constant": exact.k_constant,
        "cov_groups": exact.cov_groups,
        "f_statistic": stats.f_statistic,
        "f_pvalue": stats.f_pvalue,
        "log_likelihood": stats.log_likelihood,
        "aic": stats.aic,
        "bic": stats.bic,
        "df_model": stats.df_model,
        "df_resid": stats.df_resid,
        "cov_params": [list(row) for row in exact.cov_params],
        "refinement_steps": exact.refinement_steps,
        "warnings": list(exact.notes),
    }
    sgd_block = {
        "intercept": sgd.intercept,
        "coefficients": list(sgd.coefficients),
        "epochs": sgd.epochs,
        "final_loss": sgd.final_loss,
        "converged": comparison.converged,
        "stop_reason": sgd.stop_reason,
        "distance_estimate": sgd.distance,
        "distance_floor": sgd.distance_floor,
        "optimizer": sgd.optimizer,
        "precondition": sgd.precondition,
        "lr": sgd.lr,
        "momentum": sgd.momentum,
        "device": sgd.device,
        "dtype": sgd.dtype,
    }
    doc = Coefficients(design.target, tuple(design.term_names), design.intercept, exact_block, sgd_block,
                       formula=design.formula.formula if design.formula else None, nobs=design.n,
                       dropped_rows=dropped, weights=weights)
    return nulled(doc.to_json(), {"exact": _exact_reason(exact), "sgd": _sgd_reason(sgd.stop_reason, sgd.epochs)})


def _exact_reason(exact: ExactFit) -> str:
    """Why a statistic of the exact fit can be infinite or undefined."""
    if exact.rss == 0:
        return "the fit is perfect (residual sum of squares 0): this statistic is infinite or undefined"
    return "beyond float64's range for this data"


def _sgd_reason(stop_reason: str, epochs: int) -> str:
    if stop_reason == "diverged":
        return f"SGD diverged at epoch {epochs}: its parameters or loss are no longer finite numbers"
    return "beyond float64's range for this training"


def design_doc(design: Design, geometry: Geometry, exact: ExactFit, weights: str | None = None) -> dict:
    """design.json: the exact fit in the design's well-conditioned basis W = X T = Q R, what a
    prediction needs: W c = X beta with c = T^-1 beta (exact rationals, rounded once), and R for
    the leverage h = |R^-T w|^2 of a new row w (W^T W = R^T R). weights: the weights' column of a
    weighted fit, whose geometry is the whitened design's: a new row of weight 1 is [1, terms]."""
    basis = geometry.basis
    beta = [Fraction(float(v)) for v in exact.params]
    c = rq.matvec(rq.upper_inverse(basis.exact), beta)
    features = design.stats.column(slice(1, None))  # the raw predictor columns (target first)
    return DesignRecord(
        target=design.target, features=tuple(design.names), terms=tuple(design.term_names), degree=design.degree,
        intercept=design.intercept, rows=design.n,
        basis=BasisRecord(basis.kind, _floats(basis.shift), _floats(basis.scale), float(basis.ones), basis.degree),
        basis_coefficients=_floats(c), r_factor=tuple(_floats(row) for row in geometry.R),
        feature_min=_floats(features.min), feature_max=_floats(features.max),
        formula=design.formula.to_json() if design.formula else None, weights=weights,
    ).to_json()


def _floats(values) -> tuple[float, ...]:
    return tuple(float(v) for v in values)


def comparison_doc(comparison: Comparison) -> dict:
    """comparison.json: every field of the Comparison; a quantity that does not exist is null with its
    reason beside it."""
    doc = dataclasses.asdict(comparison)
    diverged = _sgd_reason(comparison.stop_reason, comparison.epochs)
    reasons = {key: diverged for key in doc}
    if comparison.stop_reason != "diverged":
        reasons |= {
            "max_rel_diff": "an exact parameter is 0 where SGD's is not: no relative difference exists",
            "relative_distance": "every exact parameter is 0: no relative distance exists",
        }
    reasons["epochs_needed_estimate"] = "the loss is no longer falling: no rate to extrapolate"
    if doc["epochs_needed_estimate"] is None:  # None, not infinite: say why there is no estimate
        doc["epochs_needed_estimate_reason"] = (
            "SGD reached the exact fit: no more epochs are needed" if comparison.converged else
            "SGD diverged: no rate to extrapolate" if comparison.stop_reason == "diverged" else
            "fewer than 10 recorded epochs above the exact fit's loss: no rate to measure")
    return tagged(COMPARISON, nulled(doc, reasons))


def loss_history_parquet(sgd: SGDResult) -> bytes:
    """loss_history.parquet: epoch (int64, from 1) and loss (float64, original units)."""
    table = pa.table({
        "epoch": pa.array(np.arange(1, len(sgd.losses) + 1, dtype=np.int64)),
        "loss": pa.array(np.asarray(sgd.losses, dtype=np.float64)),
    })
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def environment() -> dict:
    """Versions of Python, the platform and the packages that shape the numbers."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"python": sys.version.split()[0], "platform": platform.platform(), "packages": versions}


def manifest_doc(parameters: dict, data: DataRecord, timings: dict[str, float], device: str,
                 fit_key: str | None = None, reused_from: str | None = None) -> Manifest:
    """manifest.json without version, created_at and files, which the writer adds."""
    return Manifest(data, parameters, environment() | {"device": device}, timings, fit_key=fit_key,
                    reused_from=reused_from)


@task(name="build-documents")
def build_documents_task(design, geometry, exact, sgd, comparison, alpha: float, dropped: int = 0,
                         weights: str | None = None) -> dict:
    """coefficients.json (its drift is added as it is written), comparison.json, loss_history.parquet,
    design.json and sgd_model.pt; design: the model's (a weighted fit's geometry is its whitened design's)."""
    return {
        COEFFICIENTS: coefficients_doc(design, exact, sgd, comparison, alpha, dropped, weights),
        COMPARISON: comparison_doc(comparison),
        LOSS_HISTORY: loss_history_parquet(sgd),
        DESIGN: design_doc(design, geometry, exact, weights),
        SGD_MODEL: sgd_model_bytes(design, sgd, weights),
    }
