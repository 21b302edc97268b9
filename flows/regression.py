"""The regression flow: load -> validate -> store -> (exact fit | SGD training) -> compare -> artifacts."""

# No `from __future__ import annotations` here: Prefect validates flow parameters against the real
# RunConfig class, also when a deployment loads this file by path.
import time
from contextlib import contextmanager

from prefect import flow, task

from tasks.artifacts import find_previous_version, publish_summary, write_artifacts
from tasks.compare import compare_fits_task
from tasks.config import RunConfig
from tasks.exact import fit_exact_task
from tasks.load import load_data
from tasks.plots import make_plots
from tasks.report import coefficients_doc, comparison_doc, jsonable, loss_history_parquet, manifest_doc
from tasks.sgd import train_sgd_task
from tasks.store import store_data
from tasks.summary import drift
from tasks.validate import validate_data


@contextmanager
def _timed(timings: dict[str, float], stage: str):
    start = time.perf_counter()
    yield
    timings[stage] = time.perf_counter() - start


@task(name="build-documents")
def build_documents(design, exact, sgd, comparison, previous: tuple[str | None, dict | None]) -> dict:
    """Assemble coefficients.json (with drift), comparison.json and loss_history.parquet in memory."""
    coefficients = coefficients_doc(design, exact, sgd, comparison)
    coefficients["drift"] = drift(previous[1], previous[0], coefficients)
    return {
        "coefficients.json": coefficients,
        "comparison.json": comparison_doc(comparison),
        "loss_history.parquet": loss_history_parquet(sgd),
    }


@flow(name="linreg-regression", description="Exact least squares against torch gradient descent.")
def regression_flow(config: RunConfig = RunConfig()) -> str:
    """Run the whole pipeline once and return the absolute path of the new version directory."""
    timings: dict[str, float] = {}
    with _timed(timings, "load"):
        table = load_data(str(config.data))
    with _timed(timings, "validate"):
        data = validate_data(table, config.model)
    with _timed(timings, "store"):
        stored = store_data(data.frame, str(config.data_dir), data.source)
    # The exact fit and the training are independent: run them side by side.
    exact_future = fit_exact_task.submit(data.design)
    sgd_future = train_sgd_task.with_options(timeout_seconds=config.train.timeout).submit(
        data.design, config.train)
    exact, sgd = exact_future.result(), sgd_future.result()
    timings["exact"], timings["sgd"] = exact.seconds, sgd.seconds
    with _timed(timings, "compare"):
        comparison = compare_fits_task(data.design, exact, sgd, config.converged_rtol)
    with _timed(timings, "plots"):
        figures = make_plots(data.design, exact, sgd)
    previous = find_previous_version(str(config.artifacts_dir), data.design.target,
                                     list(data.design.term_names), data.design.intercept)
    documents = build_documents(data.design, exact, sgd, comparison, previous)
    manifest = manifest_doc(
        parameters=jsonable(config.model_dump(mode="json")),
        data={"source": data.source, "sha256": stored.sha256, "rows": stored.rows, "parquet": stored.path},
        timings=timings,
        device=sgd.device,
    )
    path = write_artifacts(str(config.artifacts_dir), stored.sha256, documents | figures, manifest)
    publish_summary(documents["coefficients.json"], comparison, path, figures)
    return path
