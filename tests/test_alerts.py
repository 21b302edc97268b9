"""Alerts: drift beyond --max-drift and SGD short of the exact fit become Prefect events, the summary's
first line, and with --fail-on-drift a failed flow run (the version still written).

The end-to-end case runs the real console script against a real `prefect server` and reads the
events, the flow runs and the summary artifact back through Prefect's client.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tasks.evaluate.compare import Comparison
from tasks.publish.alerts import DRIFT_EVENT, NOT_CONVERGED_EVENT, find_alerts
from tasks.publish.schema import Coefficients
from tests.helpers import TUTORIAL_X, TUTORIAL_Y, seed_workspace
from tests.prefect_server import BIN, api_client, cli_env, prefect_server
from tests.test_cli import linreg

AUTOMATIONS = Path(__file__).resolve().parents[1] / "automations.yaml"
TUTORIAL = ["--lr", "0.001", "--epochs", "10000", "--tol", "0", "--no-standardize", "--dtype", "float32"]


def _doc(rel: float | None, since: str | None = "v1") -> Coefficients:
    return Coefficients.from_json({"target": "y", "terms": ["x"], "intercept": True, "exact": {},
            "drift": {"since": since, "max_rel_change": rel, "max_abs_change": rel,
                      "changes": {"intercept": rel, "x": 0.0}},
            "sgd": {"epochs": 10, "stop_reason": "epochs", "optimizer": "sgd", "lr": 0.1}})


def _comparison(converged: bool) -> Comparison:
    return Comparison(max_abs_diff=0.5, max_rel_diff=0.25, exact_mse=1.0, sgd_mse=1.5, excess_mse=0.5,
                      converged=converged, rtol=1e-6, distance=0.5, relative_distance=0.1, epochs=10,
                      stop_reason="epochs", epochs_needed_estimate=None, remedies=("--precondition",), summary="")


@pytest.mark.parametrize(("rel", "max_drift", "converged", "events"), [
    (0.2, 0.1, True, [DRIFT_EVENT]),
    (0.1, 0.1, True, []),  # "more than R": equal is not an alert
    (None, 0.0, True, []),  # the first version of a model has no drift
    (0.2, 0.1, False, [DRIFT_EVENT, NOT_CONVERGED_EVENT]),
    (0.0, 0.1, False, [NOT_CONVERGED_EVENT]),
    (0.2, None, False, []),  # no --max-drift: no alerts at all
])
def test_alerts_fire_on_drift_above_the_threshold_and_on_non_convergence(rel, max_drift, converged, events):
    alerts = find_alerts(_doc(rel), _comparison(converged), max_drift, "v2")
    assert [a.event for a in alerts] == events
    for alert in alerts:
        assert alert.payload["version"] == "v2" and alert.payload["model"] == "y ~ 1 + x"
        if alert.event == DRIFT_EVENT:
            assert alert.payload["max_rel_change"] == rel and alert.payload["max_drift"] == max_drift
            assert alert.payload["since"] == "v1" and f"{rel:.3g}" in alert.message
        else:
            assert alert.payload["max_rel_diff"] == 0.25 and alert.payload["remedies"] == ["--precondition"]


# --- end to end: real server, real console script -------------------------------------------------

def _csv(scale: float) -> str:
    return "x,y\n" + "".join(f"{x},{y * scale}\n" for x, y in zip(TUTORIAL_X, TUTORIAL_Y))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("alerts-prefect")
    with prefect_server(home) as url:
        yield url, home


@pytest.fixture(scope="module")
def webhook():
    """A local HTTP endpoint that records the JSON bodies POSTed to it (the notifications)."""
    received: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    server.shutdown()
    server.server_close()


def _install_automations(url: str, env: dict, hook_url: str, folder: Path) -> None:
    """The README's recipe: a notification block (here a webhook to the test), its id put into the
    shipped automations.yaml, and `prefect automation create --from-file`."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: url}):
        block_id = CustomWebhookNotificationBlock(
            name="linreg-test", url=hook_url,
            json_data={"subject": "{{subject}}", "body": "{{body}}"}).save("linreg-test-hook")
    recipe = folder / "automations.yaml"
    recipe.write_text(AUTOMATIONS.read_text().replace("00000000-0000-0000-0000-000000000000", str(block_id)))
    created = subprocess.run([str(BIN / "prefect"), "automation", "create", "--from-file", str(recipe)],
                             env=env, capture_output=True, text=True, timeout=300)
    assert created.returncode == 0, created.stdout + created.stderr


@pytest.fixture(scope="module")
def alerted(server, webhook, tmp_path_factory):
    """The shipped automations installed, then three runs of one model: a first version, a drifted
    one with --fail-on-drift, and the tutorial's unconverged training (drift within its threshold)."""
    url, home = server
    work = seed_workspace(tmp_path_factory.mktemp("alerts-work"), _csv(1.0))
    (work / "data" / "moved.csv").write_text(_csv(1.5))
    env = cli_env(home, url)
    _install_automations(url, env, webhook[0], work)
    first = linreg("run", "--max-drift", "0.1", cwd=work, env=env)
    moved = linreg("run", "data/moved.csv", "--max-drift", "0.1", "--fail-on-drift", cwd=work, env=env)
    tutorial = linreg("run", "data/moved.csv", *TUTORIAL, "--max-drift", "0.1", cwd=work, env=env)
    return {"url": url, "work": work, "runs": (first, moved, tutorial), "notes": webhook[1]}


def _events(url: str, expected: int) -> list:
    """The linreg.* events on the server, waiting (generously) for the server to persist them."""
    from prefect.events.filters import EventFilter, EventNameFilter

    deadline = time.monotonic() + 180
    with api_client(url) as client:
        while True:
            page = client.read_events(filter=EventFilter(event=EventNameFilter(prefix=["linreg."])), limit=50)
            if len(page.events) >= expected or time.monotonic() > deadline:
                return sorted(page.events, key=lambda e: e.occurred)
            time.sleep(1)


def test_a_failed_alert_run_still_writes_its_version_and_says_where(alerted):
    first, moved, tutorial = alerted["runs"]
    assert first.returncode == 0, first.stderr[-2000:]
    assert tutorial.returncode == 0, tutorial.stderr[-2000:]
    assert moved.returncode == 1, moved.stderr[-2000:]
    path = Path(moved.stdout.splitlines()[-1])
    assert (path / "coefficients.json").is_file() and (path / "manifest.json").is_file()
    assert (alerted["work"] / "artifacts" / "latest").resolve() != path  # the tutorial run came after
    assert "linreg: failed: drift 0.5 above --max-drift 0.1" in moved.stderr
    assert "Traceback" not in moved.stderr


def test_the_server_receives_drift_and_not_converged_events_with_their_figures(alerted):
    first, moved, tutorial = alerted["runs"]
    events = _events(alerted["url"], 2)
    assert [e.event for e in events] == [DRIFT_EVENT, NOT_CONVERGED_EVENT]
    drift, slow = events
    moved_version = Path(moved.stdout.splitlines()[-1]).name
    assert drift.resource.id == f"linreg.version.{moved_version}"
    assert drift.payload["since"] == Path(first.stdout.splitlines()[-1]).name
    # y scaled by 1.5 scales both coefficients by 1.5: a relative change of 0.5, independently of the fit.
    assert drift.payload["max_rel_change"] == pytest.approx(0.5, rel=1e-9)
    assert drift.payload["max_drift"] == 0.1
    assert slow.resource.id == f"linreg.version.{Path(tutorial.stdout.splitlines()[-1]).name}"
    assert slow.payload["epochs"] == 10000 and slow.payload["max_rel_diff"] > slow.payload["rtol"]
    # Each event is related to the flow run that emitted it: the drifted one failed, the other did not.
    with api_client(alerted["url"]) as client:
        states = []
        for event in (drift, slow):
            run_ids = [r.id.rsplit(".", 1)[1] for r in event.related if r.id.startswith("prefect.flow-run.")]
            assert run_ids, f"{event.event} has no related flow run: {event.related}"
            states.append(client.read_flow_run(run_ids[0]).state.type.value)
    assert states == ["FAILED", "COMPLETED"]


def test_the_summary_artifact_says_so_in_its_first_line(alerted):
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with api_client(alerted["url"]) as client:
        summaries = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["linreg-summary"])),
                                          sort=ArtifactSort.CREATED_DESC)
    first_lines = [a.data.splitlines()[0] for a in summaries]
    assert len(first_lines) == 3
    tutorial, moved, first = first_lines
    assert first.startswith("# y ~ 1 + x")
    assert moved.startswith("**ALERT: drift 0") and "max\\-drift 0\\.1" in moved
    assert tutorial.startswith("**ALERT: SGD did not converge")


def test_the_shipped_automations_notify_on_both_events(alerted):
    notes = alerted["notes"]
    deadline = time.monotonic() + 180
    while len(notes) < 2 and time.monotonic() < deadline:
        time.sleep(1)
    subjects = sorted(n["subject"] for n in notes)
    assert len(subjects) == 2, notes
    assert subjects[0] == "linreg: SGD did not converge for y ~ 1 + x"
    assert subjects[1] == "linreg: y ~ 1 + x drifted 0.5"
    drift = next(n["body"] for n in notes if "drifted" in n["subject"])
    assert "above --max-drift 0.1" in drift and Path(alerted["runs"][1].stdout.splitlines()[-1]).name in drift


def test_fail_on_drift_without_max_drift_is_a_bad_option(tmp_path):
    work = seed_workspace(tmp_path, _csv(1.0))
    result = linreg("run", "--fail-on-drift", cwd=work, env=cli_env(tmp_path / "home"))
    assert result.returncode == 2
    assert result.stderr.strip() == ("linreg: error: option --fail-on-drift: needs --max-drift R (use --max-drift "
                                     "inf to fail only when SGD does not converge)")
    result = linreg("run", "--max-drift", "-1", cwd=work, env=cli_env(tmp_path / "home"))
    assert result.returncode == 2 and result.stderr.startswith("linreg: error: option --max-drift:")
    assert not (work / "artifacts").exists()
