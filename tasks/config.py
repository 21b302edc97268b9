"""Typed, frozen configuration of one pipeline run (pydantic: Prefect validates it as a flow parameter)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tasks.errors import UserInputError
from tasks.storage import location

Optimizer = Literal["sgd", "momentum", "adam", "lbfgs"]


class ModelSpec(BaseModel):
    """What to fit: y = b0 + sum_j b_j * term_j."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    target: str = "y"
    # None: every numeric column other than the target, in file order.
    features: tuple[str, ...] | None = None
    # Polynomial degree in the single feature (terms x, x^2, ..., x^K); 1 is the straight line.
    degree: int = Field(1, ge=1, le=30)
    intercept: bool = True
    # A formula in statsmodels' syntax (tasks/kernels/formula.py): then target and intercept are the
    # formula's, features None and degree 1.
    formula: str | None = None
    # "drop": rows with a missing value in a column the model uses are left out (and counted).
    missing: Literal["error", "drop"] = "error"
    # A categorical column with more levels than this is refused.
    max_levels: int = Field(1000, ge=1)
    # Weighted least squares (statsmodels' WLS): the column of each row's weight, finite and > 0.
    weights: str | None = None


class TrainConfig(BaseModel):
    """How torch trains the same model by gradient descent."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    optimizer: Optimizer = "sgd"
    # "auto": 1/L with L the largest eigenvalue of the MSE Hessian, the largest safe step for GD.
    lr: float | Literal["auto"] = "auto"
    # An upper bound: training stops earlier once the loss stops changing (see tol).
    epochs: int = Field(10_000, ge=1, le=100_000_000)
    # None: full batch, as in the tutorial; deterministic gradient descent.
    batch_size: int | None = Field(None, ge=1)
    # Early stop ("tol"); 0 disables it. A flat loss alone cannot tell a stop from convergence (near
    # the optimum of an ill-conditioned design the loss barely moves), so the rule looks at the
    # gradient: at each check the Newton step H^-1 g (H from the geometry's R, exact and p x p),
    # mapped to the original parameters, estimates their distance to the optimum. Training stops once
    # it puts every parameter within 1e-4 x the verdict's relative tolerance (RunConfig.rtol), or
    # when the estimate has set no new best in the second half of the run while within a tenth of
    # that tolerance, or while the best loss improved by <= tol (relative) over the last 100 epochs
    # and the estimate is one the gradient's own rounding accounts for (the float noise floor).
    # An optimizer stalled farther out runs on. 1e-15 is about float64's resolution.
    tol: float = Field(1e-15, ge=0)
    # Standardize the design and target inside training; coefficients are mapped back.
    standardize: bool = True
    # Train on the orthonormal twin of the design (Z = sqrt(n) W R^-1, MSE Hessian 2 I) and map the
    # weights back exactly: plain sgd with lr auto then converges in a few epochs on any full-rank
    # design. Off by default: plain standardized training is what practitioners run.
    precondition: bool = False
    seed: int = Field(0, ge=0)
    device: Literal["cpu", "cuda", "auto"] = "auto"
    # float64 by default: the cross-check is against an exact answer, so precision matters.
    dtype: Literal["float32", "float64"] = "float64"
    # Wall-clock limit of training in seconds; None: no limit. The training loop checks it itself
    # (every epoch, and between mini-batches) and stops with stop_reason "timeout", keeping the
    # parameters reached. One hour is far beyond any sensible run here and stops a forgotten 1e8-epoch job.
    timeout: float | None = Field(3600.0, gt=0)

    @field_validator("lr")
    @classmethod
    def _positive_lr(cls, value: float | str) -> float | str:
        if value != "auto" and not (isinstance(value, float) and 0 < value < float("inf")):
            raise ValueError("must be a positive finite number or 'auto'")
        return value


class RunConfig(BaseModel):
    """One run of the pipeline: where the data is, what to fit, how to train, where outputs go."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # A local path, or a URL of an object store or other filesystem (tasks/storage.py).
    # str first: a URL string stays a string in Python and in JSON (a deployment's parameters); the
    # validator below then makes every local location a Path.
    data: str | Path = Field(Path("data/seed.csv"), union_mode="left_to_right")
    # The decimal mark of a CSV's numbers (pandas' decimal=): "," reads 130,7 as 130.7 (with ; between
    # the values, as spreadsheets in many locales write them).
    decimal: Literal[".", ","] = "."
    model: ModelSpec = ModelSpec()
    train: TrainConfig = TrainConfig()
    artifacts_dir: str | Path = Field(Path("artifacts"), union_mode="left_to_right")  # a folder or a URL
    data_dir: str | Path = Field(Path("data"), union_mode="left_to_right")  # a folder or a URL
    # The comparison calls SGD converged when every parameter is within this relative error of
    # the exact one. None: 1e-6 for float64, 1e-4 for float32 (about 1000 ulp of float32).
    rtol: float | None = Field(None, gt=0, lt=1)
    # Confidence intervals at level 1 - alpha, statsmodels' default.
    alpha: float = Field(0.05, gt=0, lt=1)
    # Alerts (tasks/publish/alerts.py): a relative drift of the exact coefficients above max_drift since the
    # previous version of the same model, or SGD not converged, emits a Prefect event; None: no alerts.
    max_drift: float | None = Field(None, ge=0)
    # With alerts, fail the flow run after the version is written.
    fail_on_drift: bool = False
    # The covariance behind every standard error, t, p, interval and F: statsmodels' cov_type.
    cov: str = "nonrobust"
    # Recompute the fits even when an earlier version has the same fit key (tasks/publish/reuse.py).
    refresh: bool = False

    @field_validator("data", "artifacts_dir", "data_dir", mode="after")
    @classmethod
    def _location(cls, value: str | Path) -> str | Path:
        """A URL stays a string (s3://..., gs://...); a path or file:///path is a Path (after the
        union's own validation, in Python and in JSON alike)."""
        try:
            return location(value)
        except UserInputError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("cov")
    @classmethod
    def _known_cov(cls, value: str) -> str:
        from tasks.exact.robust import COV_TYPES

        if value not in COV_TYPES and not (value.startswith("cluster:") and value.removeprefix("cluster:").strip()):
            raise ValueError(f"expected one of {', '.join(COV_TYPES)} or cluster:COLUMN, got {value!r}")
        return value

    @property
    def cov_type(self) -> str:
        """statsmodels' cov_type: nonrobust, HC0-HC3 or cluster."""
        return "cluster" if self.cov.startswith("cluster:") else self.cov

    @property
    def cluster(self) -> str | None:
        """The column that names each row's cluster (--cov cluster:COL), or None."""
        return self.cov.removeprefix("cluster:").strip() if self.cov_type == "cluster" else None

    @property
    def carried(self) -> dict[str, str]:
        """The columns the run reads beside the model's (the clusters of --cov cluster:COL) -> the
        option that names each (the model's weights are its own: ModelSpec.weights)."""
        return {self.cluster: f"--cov cluster:{self.cluster}"} if self.cluster else {}

    @model_validator(mode="after")
    def _fail_needs_alerts(self) -> RunConfig:
        if self.fail_on_drift and self.max_drift is None:
            raise ValueError("option --fail-on-drift: needs --max-drift R (use --max-drift inf to fail only when SGD "
                             "does not converge)")
        return self

    @property
    def converged_rtol(self) -> float:
        """The relative tolerance the verdict uses."""
        if self.rtol is not None:
            return self.rtol
        return 1e-6 if self.train.dtype == "float64" else 1e-4


# Option names as the CLI spells them, for error messages.
_OPTION_NAMES = {
    "batch_size": "--batch-size",
    "artifacts_dir": "--artifacts-dir",
    "data_dir": "--data-dir",
    "data": "DATA",
    "timeout": "--train-timeout",
    "max_drift": "--max-drift",
}


def build_config(**options: object) -> RunConfig:
    """Build a RunConfig from flat CLI-style options, raising UserInputError naming the bad option."""
    model_keys = set(ModelSpec.model_fields)
    train_keys = set(TrainConfig.model_fields)
    model = {k: v for k, v in options.items() if k in model_keys and v is not None}
    # timeout=None is meaningful (no limit); every other None means "the default".
    train = {k: v for k, v in options.items() if k in train_keys and (v is not None or k == "timeout")}
    if options.get("batch_size") is None:
        train.pop("batch_size", None)
    top = {k: v for k, v in options.items() if k not in model_keys | train_keys and v is not None}
    try:
        return RunConfig(model=ModelSpec(**model), train=TrainConfig(**train), **top)
    except ValidationError as exc:
        err = exc.errors()[0]
        if not err["loc"]:  # a check across options names them itself
            raise UserInputError(err["msg"].removeprefix("Value error, ")) from None
        name = str(err["loc"][0]) if err["loc"] else "?"
        option = _OPTION_NAMES.get(name, "--" + name.replace("_", "-"))
        message = err["msg"].removeprefix("Value error, ")
        raise UserInputError(f"option {option}: {message} (got {err.get('input')!r})") from None
