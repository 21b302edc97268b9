"""The `linreg` command line: run, versions, serve (typer; logs on stderr, results on stdout)."""

from __future__ import annotations

import atexit
import os
import sys
import tempfile
import threading
from pathlib import Path
from typing import Annotated, Optional

import click
import typer

from flows.backend import BackendUnavailable
from tasks.errors import AlertRaised, UserInputError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None, help="Exact least squares against torch gradient descent.")

# The options shared by `run` and `serve`, as typer annotations.
Data = Annotated[Path, typer.Argument(help="A .csv file, a .parquet file or a folder of .parquet files.")]
Target = Annotated[str, typer.Option(help="Target column.")]
Features = Annotated[Optional[str], typer.Option(help="Comma-separated feature columns (default: every other numeric column).")]
Degree = Annotated[int, typer.Option(help="Polynomial degree in the single feature.")]
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
ArtifactsDir = Annotated[Path, typer.Option(help="Where version folders are (default: $LINREG_ARTIFACTS_DIR, "
                                                  "else artifacts/).", envvar="LINREG_ARTIFACTS_DIR")]
DataDir = Annotated[Path, typer.Option(help="Where validated/<sha256>.parquet is stored.")]
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
# `--dask` alone: typer options cannot take an optional value, so main() writes it as `--dask local`.
LOCAL_CLUSTER = "local"


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        print(f"linreg-flow {version('linreg-flow')}")
        raise typer.Exit()


@app.callback()
def _main(version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False) -> None:
    """Exact least squares against torch gradient descent."""


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


def _prepare_output_folder(option: str, folder: Path) -> None:
    """Create the folder and prove it writable (after the input passed every check)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise UserInputError(f"option {option}: cannot write to {folder} ({exc.strerror})") from None


def _config(data: Path, target: str, features: str | None, degree: int, no_intercept: bool,
            optimizer: str, lr: str, epochs: int, batch_size: int | None, tol: float,
            standardize: bool, seed: int, device: str, dtype: str, rtol: float | None,
            artifacts_dir: Path, data_dir: Path, train_timeout: float = 3600.0,
            precondition: bool = False, alpha: float = 0.05, max_drift: float | None = None,
            fail_on_drift: bool = False, decimal: str = "."):
    """Options -> RunConfig, checked before anything runs (a bad option is exit 2, nothing written)."""
    from tasks.config import build_config

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
    for option, folder in (("--artifacts-dir", artifacts_dir), ("--data-dir", data_dir)):
        _check_writable_folder(option, folder)
    return build_config(
        data=data, target=target, features=names, degree=degree, intercept=not no_intercept,
        optimizer=optimizer, lr=lr_value, epochs=epochs, batch_size=batch_size, tol=tol,
        standardize=standardize, seed=seed, device=device, dtype=dtype, rtol=rtol, precondition=precondition,
        artifacts_dir=artifacts_dir, data_dir=data_dir, alpha=alpha, max_drift=max_drift, fail_on_drift=fail_on_drift,
        decimal=decimal,
        timeout=None if train_timeout == 0 else train_timeout,
    )


def _preflight(config):
    """The one pass over the data (load, validate, store), outside Prefect, so that bad input fails
    fast, in one line, before any write; the flow takes its result instead of reading again."""
    from tasks.ingest.prepare import prepare_data
    from tasks.training.train import resolve_device

    resolve_device(config.train.device)
    prepared = prepare_data(config.model, config.data, config.data_dir, decimal=config.decimal)
    _prepare_output_folder("--artifacts-dir", config.artifacts_dir)
    return prepared


@app.command()
def run(
    data: Data = Path("data/seed.csv"), target: Target = "y", features: Features = None,
    degree: Degree = 1, no_intercept: NoIntercept = False, optimizer: OptimizerOpt = "sgd",
    lr: Lr = "auto", epochs: Epochs = 10_000, batch_size: BatchSize = None, tol: Tol = 1e-15,
    standardize: Standardize = True, seed: Seed = 0, device: Device = "auto",
    dtype: Dtype = "float64", rtol: Rtol = None,
    artifacts_dir: ArtifactsDir = Path("artifacts"), data_dir: DataDir = Path("data"),
    train_timeout: TrainTimeout = 3600.0, precondition: Precondition = False, alpha: Alpha = 0.05,
    max_drift: MaxDrift = None, fail_on_drift: FailOnDrift = False, dask: Dask = None, decimal: Decimal = ".",
) -> None:
    """Run the pipeline once; the last line on stdout is the new version folder."""
    from flows.backend import idle_seconds

    idle_seconds()  # a bad LINREG_SERVER_IDLE_S is exit 2 before anything is read or written
    config = _config(data, target, features, degree, no_intercept, optimizer, lr, epochs, batch_size,
                     tol, standardize, seed, device, dtype, rtol, artifacts_dir, data_dir, train_timeout,
                     precondition, alpha, max_drift, fail_on_drift, decimal)
    runner = None
    if dask is not None:
        from flows.dask import task_runner

        runner = task_runner(None if dask == LOCAL_CLUSTER else dask)
    prepared = _preflight(config)
    from flows.backend import prepare_api

    api = prepare_api()  # a local server may be starting while the flow's modules load
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

    from flows.regression import regression_flow

    url = api.wait()
    flow = regression_flow if runner is None else regression_flow.with_options(task_runner=runner)
    # The local server has no UI: no "View at" link to it. Dask workers are other processes: they
    # find this run's server only through the settings Prefect sends with each task.
    with temporary_settings(updates={PREFECT_API_URL: url, PREFECT_UI_URL: ""} if url else {}):
        path = flow(config=config, prepared=prepared.to_json())
    from flows.commands.show import run_summary

    sys.stderr.flush()
    print(run_summary(Path(path)), file=sys.stderr, flush=True)
    print(path, flush=True)


@app.command()
def versions(artifacts_dir: ArtifactsDir = Path("artifacts")) -> None:
    """List the versions, newest first, with key figures."""
    from flows.commands.listing import print_versions

    print_versions(artifacts_dir)


@app.command()
def show(
    version: Annotated[str, typer.Argument(help="A version name, a path to one, or 'latest'.")] = "latest",
    artifacts_dir: ArtifactsDir = Path("artifacts"),
) -> None:
    """Print a plain-text summary of one version (default: latest)."""
    from flows.commands.show import summary_text
    from tasks.publish.reader import resolve_version

    print(summary_text(resolve_version(artifacts_dir, version)))


@app.command()
def diff(
    a: Annotated[str, typer.Argument(help="A version name, a path to one, or 'latest'.")],
    b: Annotated[str, typer.Argument(help="A version name, a path to one, or 'latest'.")],
    artifacts_dir: ArtifactsDir = Path("artifacts"),
    force: Annotated[bool, typer.Option("--force", help="Compare even when the models differ.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the comparison as JSON.")] = False,
) -> None:
    """Two versions side by side: coefficients, their changes, data, parameters, R² and verdict."""
    from flows.commands.diff import diff_report

    print(diff_report(artifacts_dir, a, b, force=force, as_json=as_json))


@app.command()
def predict(
    args: Annotated[list[str], typer.Argument(
        metavar="[VERSION] DATA", help="The version (default latest; a name, a path or 'latest') and the table "
                                       "to predict for (.csv, .parquet or a folder of .parquet files).")],
    out: Annotated[Optional[Path], typer.Option(
        help="Output file, .parquet or .csv (default: DATA's name + .predictions.parquet, here).")] = None,
    model: Annotated[str, typer.Option(
        help="exact or sgd: which model fills the column `prediction` (both are always written).")] = "exact",
    alpha: Annotated[Optional[float], typer.Option(
        help="Intervals at level 1 - alpha (default: the version's alpha).")] = None,
    artifacts_dir: ArtifactsDir = Path("artifacts"),
) -> None:
    """Predict from a stored version (never refits); the last line on stdout is the output file."""
    from flows.commands.predict import predict_command

    if len(args) > 2:
        raise UserInputError(f"predict takes [VERSION] DATA, got {len(args)} arguments: {' '.join(args)}")
    version, data = ("latest", args[0]) if len(args) == 1 else (args[0], args[1])
    path = predict_command(artifacts_dir, version, Path(data), out=out, model=model, alpha=alpha)
    sys.stderr.flush()
    print(path, flush=True)


@app.command()
def serve(
    data: Data = Path("data/seed.csv"), target: Target = "y", features: Features = None,
    degree: Degree = 1, no_intercept: NoIntercept = False, optimizer: OptimizerOpt = "sgd",
    lr: Lr = "auto", epochs: Epochs = 10_000, batch_size: BatchSize = None, tol: Tol = 1e-15,
    standardize: Standardize = True, seed: Seed = 0, device: Device = "auto",
    dtype: Dtype = "float64", rtol: Rtol = None,
    artifacts_dir: ArtifactsDir = Path("artifacts"), data_dir: DataDir = Path("data"),
    train_timeout: TrainTimeout = 3600.0, precondition: Precondition = False, alpha: Alpha = 0.05,
    max_drift: MaxDrift = None, fail_on_drift: FailOnDrift = False, decimal: Decimal = ".",
    cron: Annotated[Optional[str], typer.Option(help="Cron schedule, e.g. '0 6 * * *'.")] = None,
    interval: Annotated[Optional[float], typer.Option(help="Seconds between runs.")] = None,
    name: Annotated[str, typer.Option(help="Deployment name.")] = "linreg-scheduled",
) -> None:
    """Serve the flow as a deployment on a schedule, against the Prefect API in PREFECT_API_URL."""
    config = _config(data, target, features, degree, no_intercept, optimizer, lr, epochs, batch_size,
                     tol, standardize, seed, device, dtype, rtol, artifacts_dir, data_dir, train_timeout,
                     precondition, alpha, max_drift, fail_on_drift, decimal)
    _preflight(config)
    from flows.schedule import serve_flow

    serve_flow(config, cron=cron, interval=interval, name=name)


def _is_click_error(exc: BaseException) -> bool:
    """click's exceptions, and typer's own copy of them (typer vendors click), by their interface."""
    return isinstance(exc, click.ClickException) or (
        hasattr(exc, "format_message") and isinstance(getattr(exc, "exit_code", None), int))


def _looks_like_address(token: str) -> bool:
    """tcp://host:port, host:port or a scheduler file path ending in .json."""
    return "://" in token or token.endswith(".json") or (
        ":" in token and token.rsplit(":", 1)[1].isdigit())


def _dask_flag(argv: list[str]) -> list[str]:
    """`--dask` with no ADDRESS after it (end, another option, or DATA) becomes `--dask local`."""
    out: list[str] = []
    for i, token in enumerate(argv):
        out.append(token)
        if token == "--dask" and (i + 1 == len(argv) or not _looks_like_address(argv[i + 1])):
            out.append(LOCAL_CLUSTER)
    return out


def entry() -> None:
    """The console script (`linreg`, `python -m flows`): main(), then a quick exit.

    A run imports about 3000 modules (torch, Prefect, pandas, matplotlib); the interpreter's teardown
    of them takes 0.8 s on a 2-core machine and does nothing a run needs. So once main() has
    finished, this does what the interpreter would do first (stop the executors and join the non-daemon threads, run the
    atexit handlers, where Prefect sends its last logs; flush stdout and stderr) and then exits
    with main()'s status without the teardown. An exception other than SystemExit (LINREG_DEBUG)
    takes the usual path and its traceback.
    """
    try:
        main()
        code = 0
    except SystemExit as done:
        code = done.code
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    threading._shutdown()  # what Py_FinalizeEx calls first: executors' exit hooks, then joins
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can reach it
            pass
    os._exit(code or 0)


def main(argv: list[str] | None = None) -> None:
    """Entry point: exit 0 on success, 2 on bad input (one line on stderr), 1 on any other failure."""
    # Offline by default: no usage analytics from the temporary server, unless the user says so.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    command = typer.main.get_command(app)
    try:
        args = _dask_flag(sys.argv[1:] if argv is None else list(argv))
        code = command.main(args=args, prog_name="linreg", standalone_mode=False)
    except UserInputError as exc:
        print(f"linreg: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except AlertRaised as exc:  # the version is written: its path stays the last stdout line
        print(exc.path, flush=True)
        print(f"linreg: failed: {exc}", file=sys.stderr)
        sys.exit(1)
    except BackendUnavailable as exc:
        print(f"linreg: failed: {exc}", file=sys.stderr)
        sys.exit(1)
    except (click.Abort, KeyboardInterrupt):
        print("linreg: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the one place that turns failures into exit codes
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare `linreg`: show the help
            print(exc.ctx.get_help() if getattr(exc, "ctx", None) else exc.format_message())
            sys.exit(0)
        if _is_click_error(exc):  # a bad option value or an unknown option or command
            message = " ".join(exc.format_message().split())
            print(f"linreg: error: {message}", file=sys.stderr)
            sys.exit(exc.exit_code if exc.exit_code else 2)
        if os.environ.get("LINREG_DEBUG"):
            raise
        print(f"linreg: failed: {type(exc).__name__}: {exc} (set LINREG_DEBUG=1 for a traceback)",
              file=sys.stderr)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
