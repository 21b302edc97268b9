"""The options `run` and `serve` share, declared once, and what they become: a checked RunConfig.

`run_options` gives a typer command these options as parameters and hands them to it as one dict;
`config_from` turns that dict into a RunConfig (a bad option is exit 2 before anything is written);
`preflight` makes the one pass over the data before Prefect starts.
"""

from __future__ import annotations

import functools
import inspect
import os
import tempfile
from pathlib import Path
from typing import Annotated, Optional, get_type_hints

import typer

from tasks.errors import UserInputError
from tasks.storage import is_url, location

# The options shared by `run` and `serve`, as typer annotations.
Data = Annotated[str, typer.Argument(help="A .csv file, a .parquet file or a folder of .parquet files, local or a URL "
                                           "(s3://BUCKET/KEY, gs://, az://, file://; a prefix of .parquet files).")]
Target = Annotated[Optional[str], typer.Option(help="Target column (default: y).")]
Features = Annotated[Optional[str], typer.Option(help="Comma-separated feature columns (default: every other numeric column).")]
Degree = Annotated[Optional[int], typer.Option(help="Polynomial degree in the single feature (default: 1).")]
Formula = Annotated[Optional[str], typer.Option(
    help="The model as statsmodels writes it, e.g. \"y ~ x1 + C(store) + x1:x2 + np.log(x3)\" (string columns "
         "are categorical; - 1 drops the intercept). Not with --target, --features, --degree or --no-intercept.")]
Missing = Annotated[str, typer.Option(
    help="error: a missing value in a column the model uses is exit 2; drop: such rows are left out and counted.")]
MaxLevels = Annotated[int, typer.Option(help="The most levels a categorical column may have.")]
Cov = Annotated[str, typer.Option(help="The covariance behind standard errors, t, p, intervals and F: nonrobust, HC0, "
                                       "HC1, HC2, HC3 or cluster:COL (statsmodels' cov_type; COL names each row's "
                                       "cluster).")]
Weights = Annotated[Optional[str], typer.Option(
    help="Weighted least squares (statsmodels' WLS): the column of each row's weight, finite and > 0; SGD "
         "trains on the same weighted MSE.", metavar="COL")]
NoIntercept = Annotated[bool, typer.Option("--no-intercept", help="Fit without an intercept.")]
OptimizerOpt = Annotated[str, typer.Option(help="sgd, momentum, adam or lbfgs.")]
Lr = Annotated[str, typer.Option(help="Learning rate, or 'auto' (1/L from the design's spectrum).")]
Epochs = Annotated[int, typer.Option(help="Upper bound on training epochs.")]
BatchSize = Annotated[Optional[int], typer.Option(help="Mini-batch size (default: full batch).")]
Tol = Annotated[float, typer.Option(help=(
    "Early stop (0 disables it): training stops once the distance to the exact fit estimated from the "
    "gradient (its Newton step) is within the verdict's tolerance, or once the best loss improved by "
    "<= tol (relative) over 100 epochs and that estimate is at float rounding."))]
Standardize = Annotated[bool, typer.Option("--standardize/--no-standardize", help="Standardize inside training.")]
Seed = Annotated[int, typer.Option(help="Seed of the local torch generator.")]
Device = Annotated[str, typer.Option(help="cpu, cuda or auto.")]
Dtype = Annotated[str, typer.Option(help="float32 or float64.")]
TrainTimeout = Annotated[float, typer.Option(
    help="Time limit of training in seconds; it then stops (stop reason 'timeout') and keeps what it reached (0: none).")]
Rtol = Annotated[Optional[float], typer.Option(help="Relative tolerance of the converged verdict (default 1e-6, float32: 1e-4).")]
ArtifactsDir = Annotated[str, typer.Option(help="Where version folders are, a folder or a URL (s3://BUCKET/PREFIX, "
                                                 "gs://, az://, file://; default: $LINREG_ARTIFACTS_DIR, else artifacts/).",
                                            envvar="LINREG_ARTIFACTS_DIR")]
DataDir = Annotated[str, typer.Option(help="Where validated/<sha256>.parquet is stored: a folder or a URL "
                                            "(s3://BUCKET/PREFIX, gs://, az://, file://).")]
Alpha = Annotated[float, typer.Option(help="Confidence intervals at level 1 - alpha.")]
Precondition = Annotated[bool, typer.Option(
    "--precondition", help="Train on the orthonormal basis of the design and map the weights back exactly.")]
Dask = Annotated[Optional[str], typer.Option(
    help="Run the per-partition work on a Dask cluster: the scheduler at ADDRESS, or a local cluster "
         "when given without one.", metavar="[ADDRESS]")]
MaxDrift = Annotated[Optional[float], typer.Option(
    help="Alert (a Prefect event) when an exact coefficient moved more than this relative change since the "
         "previous version of the same model, or when SGD did not converge.")]
Decimal = Annotated[str, typer.Option(help="The decimal mark of a CSV's numbers: '.' or ',' (130,7 with ; between "
                                            "values, as pandas' decimal=).")]
FailOnDrift = Annotated[bool, typer.Option(
    "--fail-on-drift", help="With --max-drift: an alert fails the flow run (the version is still written).")]
Refresh = Annotated[bool, typer.Option(
    "--refresh", help="Recompute the fits even when an earlier version has the same data hash, model and options "
                      "(otherwise its fits are reused and the manifest names it in reused_from).")]
# `--dask` alone: typer options cannot take an optional value, so main() writes it as `--dask local`.
LOCAL_CLUSTER = "local"

# name, typer annotation, default: the shared options in the order `--help` lists them.
RUN_OPTIONS = (
    ("data", Data, "data/seed.csv"), ("formula", Formula, None), ("target", Target, None),
    ("features", Features, None), ("degree", Degree, None), ("no_intercept", NoIntercept, False),
    ("missing", Missing, "error"), ("max_levels", MaxLevels, 1000), ("weights", Weights, None),
    ("cov", Cov, "nonrobust"), ("optimizer", OptimizerOpt, "sgd"),
    ("lr", Lr, "auto"), ("epochs", Epochs, 10_000), ("batch_size", BatchSize, None), ("tol", Tol, 1e-15),
    ("standardize", Standardize, True), ("seed", Seed, 0), ("device", Device, "auto"),
    ("dtype", Dtype, "float64"), ("rtol", Rtol, None), ("artifacts_dir", ArtifactsDir, "artifacts"),
    ("data_dir", DataDir, "data"), ("train_timeout", TrainTimeout, 3600.0),
    ("precondition", Precondition, False), ("alpha", Alpha, 0.05), ("max_drift", MaxDrift, None),
    ("fail_on_drift", FailOnDrift, False), ("decimal", Decimal, "."), ("refresh", Refresh, False),
)


def run_options(command):
    """command(options, **own): typer sees the shared options, then command's own parameters; the
    command gets the shared ones as one dict `options`."""
    hints = get_type_hints(command, include_extras=True)
    own = [p.replace(annotation=hints.get(p.name, p.annotation))
           for p in list(inspect.signature(command).parameters.values())[1:]]
    shared = [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default, annotation=annotation)
              for name, annotation, default in RUN_OPTIONS]

    @functools.wraps(command)
    def wrapper(**kwargs):
        options = {name: kwargs.pop(name) for name, _, _ in RUN_OPTIONS}
        return command(options, **kwargs)

    params = shared + own
    wrapper.__signature__ = inspect.Signature(params)
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    return wrapper


def _check_writable_folder(option: str, folder: Path) -> None:
    """The folder exists and is writable, or its nearest existing parent would let us create it."""
    if folder.exists() and not folder.is_dir():
        raise UserInputError(f"option {option}: {folder} exists and is not a folder")
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        what = "is not writable" if existing == folder else f"cannot be created in {existing}"
        raise UserInputError(f"option {option}: {folder} {what}")


def _prepare_output_folder(option: str, folder: str | Path) -> None:
    """Create the folder and prove it writable (after the input passed every check); a URL's store
    was checked with the options and has no folders to create."""
    if is_url(folder):
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise UserInputError(f"option {option}: cannot write to {folder} ({exc.strerror})") from None


def _config(data: str | Path, target: str | None, features: str | None, degree: int | None, no_intercept: bool,
            optimizer: str, lr: str, epochs: int, batch_size: int | None, tol: float,
            standardize: bool, seed: int, device: str, dtype: str, rtol: float | None,
            artifacts_dir: str | Path, data_dir: str | Path, train_timeout: float = 3600.0,
            precondition: bool = False, alpha: float = 0.05, max_drift: float | None = None,
            fail_on_drift: bool = False, decimal: str = ".", formula: str | None = None, missing: str = "error",
            max_levels: int = 1000, cov: str = "nonrobust", weights: str | None = None, refresh: bool = False):
    """Options -> RunConfig, checked before anything runs (a bad option is exit 2, nothing written)."""
    from tasks.config import build_config

    intercept = not no_intercept
    if formula is not None:
        from tasks.kernels.formula import FormulaError, parse_formula

        given = [name for name, value in (("--target", target), ("--features", features), ("--degree", degree),
                                          ("--no-intercept", no_intercept or None)) if value is not None]
        if given:
            raise UserInputError(f"option --formula: not with {', '.join(given)} (the formula names the target "
                                 "and the terms; - 1 drops the intercept)")
        try:
            target, parsed = parse_formula(formula)
        except FormulaError as exc:
            raise UserInputError(f"option --formula {formula!r}: {exc}") from None
        intercept = "1" in {str(term) for term in parsed.rhs}

    if lr != "auto":
        try:
            lr_value: float | str = float(lr)
        except ValueError:
            raise UserInputError(f"option --lr: expected a number or 'auto', got {lr!r}") from None
    else:
        lr_value = lr
    names = None
    if features is not None:
        names = tuple(f.strip() for f in features.split(",") if f.strip())
        if not names:
            raise UserInputError(f"option --features: no column names in {features!r}")
    artifacts_dir, data_dir = location(artifacts_dir), location(data_dir)
    for option, folder in (("--artifacts-dir", artifacts_dir), ("--data-dir", data_dir)):
        if is_url(folder):  # the bucket exists and these credentials may list it; nothing written
            from tasks.publish.remote import check_writable

            check_writable(option, folder)
        else:
            _check_writable_folder(option, folder)
    return build_config(
        data=data, target="y" if target is None else target, features=names, degree=1 if degree is None else degree,
        intercept=intercept, formula=formula,
        missing=missing, max_levels=max_levels, cov=cov, weights=weights,
        optimizer=optimizer, lr=lr_value, epochs=epochs, batch_size=batch_size, tol=tol,
        standardize=standardize, seed=seed, device=device, dtype=dtype, rtol=rtol, precondition=precondition,
        artifacts_dir=artifacts_dir, data_dir=data_dir, alpha=alpha, max_drift=max_drift, fail_on_drift=fail_on_drift,
        decimal=decimal, refresh=refresh,
        timeout=None if train_timeout == 0 else train_timeout,
    )


def preflight(config, passes=None):
    """The one pass over the data (load, validate, store), outside Prefect, so that bad input fails
    fast, in one line, before any write; the flow takes its result instead of reading again.
    passes: where its parts run (--dask: on the cluster's workers); None: here, in one piece."""
    from tasks.ingest.prepare import prepare_data
    from tasks.kernels.passes import LOCAL
    from tasks.training.train import resolve_device

    resolve_device(config.train.device)
    prepared = prepare_data(config.model, config.data, config.data_dir, decimal=config.decimal,
                            extra=config.carried, passes=passes or LOCAL)
    _prepare_output_folder("--artifacts-dir", config.artifacts_dir)
    return prepared


def config_from(options: dict):
    """The RunConfig of the shared options (a dict from run_options)."""
    return _config(**options)
