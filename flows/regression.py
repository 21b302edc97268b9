"""The regression flow: load -> validate -> store -> (exact fit | SGD training) -> compare -> artifacts."""

# No `from __future__ import annotations` here: Prefect validates flow parameters against the real
# RunConfig class, also when a deployment loads this file by path.
import time
from contextlib import contextmanager

from prefect import flow, task

from tasks.artifacts import publish_summary, write_artifacts
from tasks.compare import compare_fits_task
from tasks.config import RunConfig
from tasks.exact import fit_exact_task
from tasks.faults import crash_point
from tasks.load import load_data
from tasks.plots import make_plots
from tasks.report import coefficients_doc, comparison_doc, jsonable, loss_history_parquet, manifest_doc
from tasks.sgd import train_sgd_task
from tasks.store import store_data
from tasks.validate import validate_data


@contextmanager
def _timed(timings: dict[str, float], stage: str):
    start = time.perf_counter()
    yield
    timings[stage] = time.perf_counter() - start


@task(name="build-documents")
def build_documents(design, exact, sgd, comparison) -> dict:
    """coefficients.json (its drift is added as it is written), comparison.json, loss_history.parquet."""
    return {
        "coefficients.json": coefficients_doc(design, exact, sgd, comparison),
        "comparison.json": comparison_doc(comparison),
        "loss_history.parquet": loss_history_parquet(sgd),
    }


@flow(name="linreg-regression", description="Exact least squares against torch gradient descent.")
def regression_flow(config: RunConfig = RunConfig()) -> str:
    """Run the whole pipeline once and return the absolute path of the new version directory."""
    timings: dict[str, float] = {}
    with _timed(timings, "load"):
        table = load_data(str(config.data))
    crash_point("loaded")
    with _timed(timings, "validate"):
        data = validate_data(table, config.model)
    with _timed(timings, "store"):
        stored = store_data(data.frame, str(config.data_dir), data.source)
    # The exact fit and the training are independent: run them side by side.
    exact_future = fit_exact_task.submit(data.design)
    sgd_future = train_sgd_task.submit(data.design, config.train)  # the time limit: in train_sgd
    exact, sgd = exact_future.result(), sgd_future.result()
    timings["exact"], timings["sgd"] = exact.seconds, sgd.seconds
    with _timed(timings, "compare"):
        comparison = compare_fits_task(data.design, exact, sgd, config.converged_rtol)
    with _timed(timings, "plots"):
        figures = make_plots(data.design, exact, sgd)
    documents = build_documents(data.design, exact, sgd, comparison)
    manifest = manifest_doc(
        parameters=jsonable(config.model_dump(mode="json")),
        data={"source": data.source, "sha256": stored.sha256, "rows": stored.rows, "parquet": stored.path},
        timings=timings,
        device=sgd.device,
    )
    # Drift is measured while the version is named, against the newest version at that moment.
    version = write_artifacts(str(config.artifacts_dir), stored.sha256, documents | figures, manifest)
    crash_point("published")
    publish_summary(version.coefficients, comparison, version.path, figures)
    return version.path
