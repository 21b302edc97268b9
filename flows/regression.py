"""The regression flow: prepare (load -> validate -> store, one pass) -> (exact fit | SGD training)
-> compare -> plots -> artifacts."""

# No `from __future__ import annotations` here: Prefect validates flow parameters against the real
# RunConfig class, also when a deployment loads this file by path.
import time
from contextlib import contextmanager
from typing import Optional

from prefect import flow, get_run_logger
from prefect.context import FlowRunContext
from prefect.states import Failed

from tasks.config import RunConfig
from tasks.errors import AlertRaised
from tasks.evaluate.compare import compare_fits_task
from tasks.evaluate.plots import make_plots_task
from tasks.exact.fit import fit_exact_task
from tasks.faults import crash_point
from tasks.ingest.prepare import Prepared, prepare_data_task
from tasks.kernels.passes import LOCAL, Passes
from tasks.publish.alerts import emit_alerts_task, find_alerts
from tasks.publish.documents import build_documents_task, manifest_doc
from tasks.publish.reader import jsonable
from tasks.publish.reuse import fit_key, reusable_version
from tasks.publish.schema import DataRecord
from tasks.publish.writer import publish_summary_task, write_artifacts_task
from tasks.storage import name_of
from tasks.training.train import train_sgd_task
from tasks.wording import counted


@contextmanager
def _timed(timings: dict[str, float], stage: str):
    start = time.perf_counter()
    yield
    timings[stage] = time.perf_counter() - start


def _passes() -> Passes:
    """Passes run part by part on a Dask task runner (--dask), in one piece on any other
    (distributed is imported only then: it costs a second and more)."""
    runner = FlowRunContext.get().task_runner
    if type(runner).__name__ != "DaskTaskRunner":
        return LOCAL
    from flows.dask import parts_for, task_map

    return Passes(task_map, parts_for(runner))


@flow(name="linreg-regression", description="Exact least squares against torch gradient descent.")
def regression_flow(config: RunConfig = RunConfig(), prepared: Optional[dict] = None) -> str:
    """Run the whole pipeline once and return the absolute path of the new version directory.

    prepared: Prepared.to_json() of the pass the caller already made over config.data (the CLI
    validates before Prefect starts, so bad input fails fast); None: this run makes it.
    """
    timings: dict[str, float] = {}
    if prepared is None:
        data = prepare_data_task(config.model, str(config.data), str(config.data_dir), config.decimal,
                                 config.carried)
    else:
        data = Prepared.from_json(prepared)
        get_run_logger().info("%s: validated and stored before the flow run (%s, %s)",
                              data.source, counted(data.rows, "row"), data.path)
    if data.selection:
        get_run_logger().info("%s: %s", data.source, data.selection)
    timings.update(data.timings)
    crash_point("loaded")
    # The fits run on the fitted design: the model's, or its whitened rows (--weights), with the same parameters.
    design, fitted = data.design(config.model), data.fitted(config.model)
    # On a Dask task runner every pass runs part by part on the cluster; elsewhere in one piece.
    passes = _passes()
    # The fits of an earlier version with the same data, model and options are reused (--refresh: not).
    key = fit_key(data.sha256, config)
    earlier = None if config.refresh else reusable_version(config.artifacts_dir, key)
    exact_task, sgd_task = (t.with_options(refresh_cache=earlier is None) for t in (fit_exact_task, train_sgd_task))
    # The exact fit and the training are independent: run them side by side.
    start = time.perf_counter()
    exact_future = exact_task.submit(fitted, data.geometry, passes, config.cov_type, config.cluster, key=key)
    sgd_future = sgd_task.submit(fitted, config.train, data.geometry, config.converged_rtol, passes, key=key)
    exact, sgd = exact_future.result(), sgd_future.result()
    reused = earlier if exact_future.state.name == sgd_future.state.name == "Cached" else None
    if reused:
        get_run_logger().info("reused the exact fit and the training of version %s (the same data, model and "
                              "options; --refresh recomputes them)", reused)
        timings["exact"] = timings["sgd"] = time.perf_counter() - start
    else:
        timings["exact"], timings["sgd"] = exact.seconds, sgd.seconds
    with _timed(timings, "compare"):  # and the plot's view, in the same pass where the rows are the same
        comparison, view = compare_fits_task(fitted, exact, sgd, config.converged_rtol, passes,
                                             with_view=data.weighting is None)
    with _timed(timings, "plots"):
        images = make_plots_task(design, exact, sgd, passes, view)
    documents = build_documents_task(design, data.geometry, exact, sgd, comparison, config.alpha, data.dropped,
                                     config.model.weights)
    manifest = manifest_doc(
        parameters=jsonable(config.model_dump(mode="json")),
        data=DataRecord(data.source, data.sha256, data.rows, data.path),
        timings=timings,
        device=sgd.device,
        fit_key=key,
        reused_from=reused,
    )
    # Drift is measured while the version is named, against the newest version at that moment.
    version = write_artifacts_task(str(config.artifacts_dir), data.sha256, documents | images, manifest)
    crash_point("published")
    alerts = find_alerts(version.coefficients, comparison, config.max_drift, name_of(version.path))
    if alerts:
        emit_alerts_task(alerts, version.path)
    messages = tuple(a.message for a in alerts)
    publish_summary_task(version.coefficients, comparison, version.path, images, messages, version.files)
    if alerts and config.fail_on_drift:
        # A Failed state, not a raise: the run fails with this message and no traceback in its logs.
        message = "; ".join(messages)
        return Failed(message=message, data=AlertRaised(version.path, message))
    return version.path
