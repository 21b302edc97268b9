"""Alerts step: coefficients that drifted beyond --max-drift, or SGD short of the exact fit, become
Prefect events (for Automations to notify on) and the summary's first line.

The drift is coefficients.json's: the largest relative change of an exact coefficient since the
newest sound version of the same model (target, terms, intercept), measured as the version is named.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefect import get_run_logger, task

from tasks.evaluate.compare import Comparison
from tasks.publish.reader import jsonable
from tasks.publish.schema import Coefficients
from tasks.wording import counted

DRIFT_EVENT = "linreg.drift.exceeded"
NOT_CONVERGED_EVENT = "linreg.sgd.not-converged"


@dataclass(frozen=True)
class Alert:
    """One event to emit: its name, a one-line message, and the figures behind it."""

    event: str
    message: str
    payload: dict


def find_alerts(doc: Coefficients, comparison: Comparison, max_drift: float | None, version: str) -> list[Alert]:
    """The alerts of a written version (doc: its coefficients.json); none unless max_drift is set."""
    if max_drift is None:
        return []
    found = []
    common = {"version": version, "model": doc.model_formula(), "target": doc.target, "terms": list(doc.terms),
              "intercept": doc.intercept}
    drift = doc.drift
    moved = drift.max_rel_change if drift is not None else None
    if moved is not None and moved > max_drift:
        found.append(Alert(
            DRIFT_EVENT,
            f"drift {moved:.3g} above --max-drift {max_drift:g} since {drift.since}",
            common | {"max_drift": max_drift, "max_rel_change": moved, "max_abs_change": drift.max_abs_change,
                      "since": drift.since, "changes": drift.changes}))
    if not comparison.converged:
        sgd = doc.sgd
        found.append(Alert(
            NOT_CONVERGED_EVENT,
            f"SGD did not converge: max relative difference {comparison.max_rel_diff:.3g} from the exact fit "
            f"after {counted(sgd['epochs'], 'epoch')} ({sgd['stop_reason']})",
            common | {"max_rel_diff": comparison.max_rel_diff, "max_abs_diff": comparison.max_abs_diff,
                      "rtol": comparison.rtol, "excess_mse": comparison.excess_mse, "epochs": sgd["epochs"],
                      "stop_reason": sgd["stop_reason"], "optimizer": sgd["optimizer"], "lr": sgd["lr"],
                      "remedies": list(comparison.remedies)}))
    return found


@task(name="emit-alerts")
def emit_alerts_task(alerts: list[Alert], version_path: str) -> None:
    """Emit each alert as a Prefect event about the version (related to this flow run)."""
    from prefect.events import emit_event

    logger = get_run_logger()
    for alert in alerts:
        version = alert.payload["version"]
        emit_event(event=alert.event, payload=jsonable(alert.payload | {"path": version_path}), resource={
            "prefect.resource.id": f"linreg.version.{version}",
            "prefect.resource.name": version,
            "linreg.model": alert.payload["model"],
        })
        logger.warning("%s: %s", alert.event, alert.message)
