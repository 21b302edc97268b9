"""The `linreg` command line: run, versions, serve (typer; logs on stderr, results on stdout)."""

from __future__ import annotations

import atexit
import os
import sys
import threading
from pathlib import Path
from typing import Annotated, Optional

import click
import typer

from flows.backend import BackendUnavailable
from flows.options import LOCAL_CLUSTER, ArtifactsDir, Dask, config_from, preflight, run_options
from tasks.errors import AlertRaised, UserInputError
from tasks.publish.schema import LATEST
from tasks.storage import location

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None, help="Exact least squares against torch gradient descent.")

def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        print(f"linreg-flow {version('linreg-flow')}")
        raise typer.Exit()


@app.callback()
def _main(version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False) -> None:
    """Exact least squares against torch gradient descent."""


@app.command()
@run_options
def run(options: dict, dask: Dask = None) -> None:
    """Run the pipeline once; the last line on stdout is the new version folder."""
    from flows.backend import idle_seconds

    idle_seconds()  # a bad LINREG_SERVER_IDLE_S is exit 2 before anything is read or written
    config = config_from(options)
    if dask is None:
        path = _run(config, None, None)
    else:
        from flows.dask import cluster

        with cluster(None if dask == LOCAL_CLUSTER else dask) as (runner, passes):
            path = _run(config, runner, passes)
    from flows.commands.show import run_summary
    from tasks.publish.remote import local_versions

    sys.stderr.flush()
    with local_versions(config.artifacts_dir, (path,), only_named=True) as (_, (version,), shown):
        print(shown(run_summary(Path(version))), file=sys.stderr, flush=True)
    print(path, flush=True)


def _run(config, runner, passes) -> str:
    """The run of `run`: the ingest (part by part with passes), then the flow on runner (None: its own)."""
    from flows.backend import prepare_api

    prepared = preflight(config, passes)
    api = prepare_api()  # a local server may be starting while the flow's modules load
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

    from flows.regression import regression_flow
    from tasks.errors import user_errors_in_one_line

    user_errors_in_one_line()  # an unreachable store mid-run: one line, as bad input is
    url = api.wait()
    flow = regression_flow if runner is None else regression_flow.with_options(task_runner=runner)
    # The local server has no UI: no "View at" link to it. Dask workers are other processes: they
    # find this run's server only through the settings Prefect sends with each task.
    with temporary_settings(updates={PREFECT_API_URL: url, PREFECT_UI_URL: ""} if url else {}):
        return flow(config=config, prepared=prepared.to_json())


@app.command()
def versions(artifacts_dir: ArtifactsDir = "artifacts") -> None:
    """List the versions, newest first, with key figures."""
    from flows.commands.listing import print_versions
    from tasks.publish.remote import local_versions

    with local_versions(location(artifacts_dir)) as (folder, _, shown):
        print_versions(folder, shown)


@app.command()
def show(
    version: Annotated[str, typer.Argument(help="A version name, a path to one, or 'latest'.")] = LATEST,
    artifacts_dir: ArtifactsDir = "artifacts",
) -> None:
    """Print a plain-text summary of one version (default: latest)."""
    from flows.commands.show import summary_text
    from tasks.publish.reader import resolve_version
    from tasks.publish.remote import local_versions

    with local_versions(location(artifacts_dir), (version,)) as (folder, (version,), shown):
        print(shown(summary_text(resolve_version(folder, version))))


@app.command()
def diff(
    a: Annotated[str, typer.Argument(help="A version name, a path to one, or 'latest'.")],
    b: Annotated[str, typer.Argument(help="A version name, a path to one, or 'latest'.")],
    artifacts_dir: ArtifactsDir = "artifacts",
    force: Annotated[bool, typer.Option("--force", help="Compare even when the models differ.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the comparison as JSON.")] = False,
) -> None:
    """Two versions side by side: coefficients, their changes, data, parameters, R² and verdict."""
    from flows.commands.diff import diff_report
    from tasks.publish.remote import local_versions

    with local_versions(location(artifacts_dir), (a, b)) as (folder, (a, b), shown):
        print(shown(diff_report(folder, a, b, force=force, as_json=as_json)))


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
    artifacts_dir: ArtifactsDir = "artifacts",
) -> None:
    """Predict from a stored version (never refits); the last line on stdout is the output file."""
    from flows.commands.predict import predict_command
    from tasks.publish.remote import local_versions

    if len(args) > 2:
        raise UserInputError(f"predict takes [VERSION] DATA, got {len(args)} arguments: {' '.join(args)}")
    version, data = (LATEST, args[0]) if len(args) == 1 else (args[0], args[1])
    with local_versions(location(artifacts_dir), (version,), documents_only=False) as (folder, (version,), _):
        path = predict_command(folder, version, data, out=out, model=model, alpha=alpha)
    sys.stderr.flush()
    print(path, flush=True)


@app.command()
@run_options
def serve(
    options: dict,
    cron: Annotated[Optional[str], typer.Option(help="Cron schedule, e.g. '0 6 * * *'.")] = None,
    interval: Annotated[Optional[float], typer.Option(help="Seconds between runs.")] = None,
    name: Annotated[str, typer.Option(help="Deployment name.")] = "linreg-scheduled",
) -> None:
    """Serve the flow as a deployment on a schedule, against the Prefect API in PREFECT_API_URL."""
    config = config_from(options)
    preflight(config)
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
