"""Scheduled runs against a real Prefect server, and what its UI shows, in a real headless browser.

Everything is started here (server, `linreg serve`, Chromium) and stopped by PID, also on failure.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import TUTORIAL_B1
from tests.prefect_server import BIN, api_client, cli_env, prefect_server, stop

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
                 "--disable-component-update", "--disable-sync"]
DEPLOYMENT = "linreg-test-schedule"
SEED = Path(__file__).resolve().parents[1] / "data" / "seed.csv"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("serve-prefect")
    with prefect_server(home) as url:
        yield url, home


def _completed_runs(client, deployment_id) -> list:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])))
    failed = [r for r in runs if r.state and r.state.is_final() and not r.state.is_completed()]
    assert not failed, f"scheduled runs failed: {[(r.name, r.state.message) for r in failed]}"
    return [r for r in runs if r.state and r.state.is_completed()]


@pytest.fixture(scope="module")
def served(server, tmp_path_factory):
    """`linreg serve --interval 5` until two scheduled runs have completed; stopped by PID after."""
    url, home = server
    work = tmp_path_factory.mktemp("served")
    env = cli_env(home, url) | {"PREFECT_RUNNER_POLL_FREQUENCY": "2"}
    out = open(work / "serve.log", "wb")
    proc = subprocess.Popen(
        # Alerts on: the same data every run, so the drift is exactly 0, never "more than 0".
        [str(BIN / "linreg"), "serve", str(SEED), "--interval", "5", "--name", DEPLOYMENT,
         "--max-drift", "0", "--fail-on-drift",
         "--artifacts-dir", str(work / "artifacts"), "--data-dir", str(work / "data")],
        env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=work,
    )
    try:
        with api_client(url) as client:
            deadline = time.monotonic() + 240
            deployment = None
            while True:
                assert proc.poll() is None, (work / "serve.log").read_text()[-3000:]
                if deployment is None:
                    try:
                        deployment = client.read_deployment_by_name(f"linreg-regression/{DEPLOYMENT}")
                    except Exception:  # noqa: BLE001 - not registered yet
                        deployment = None
                if deployment is not None and len(_completed_runs(client, deployment.id)) >= 2:
                    break
                assert time.monotonic() < deadline, (work / "serve.log").read_text()[-3000:]
                time.sleep(1)
            runs = _completed_runs(client, deployment.id)
        yield {"url": url, "runs": runs, "work": work, "proc": proc}
    finally:
        stop(proc)
        out.close()


def test_scheduled_runs_complete_with_their_artifacts(served):
    """At least two scheduled runs completed; every task Completed; each has its summary and table, and
    the training's progress artifact unless the run reused an earlier version's fits (the same data
    and options: its train-sgd task is Cached and did not run)."""
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, FlowRunFilter, FlowRunFilterId

    trained = []
    with api_client(served["url"]) as client:
        for run in served["runs"][:2]:
            tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
            assert tasks and all(t.state.is_completed() for t in tasks), [(t.name, t.state.type) for t in tasks]
            names = {t.name.rsplit("-", 1)[0] for t in tasks}
            assert {"prepare-data", "fit-exact", "train-sgd", "write-artifacts", "publish-summary"} <= names
            artifacts = client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id])))
            by_type = {a.type: a for a in artifacts}
            assert by_type["markdown"].key == "linreg-summary"
            assert by_type["table"].key == "linreg-coefficients"
            train = next(t for t in tasks if t.name.startswith("train-sgd"))
            trained.append(train.state.name != "Cached")
            if trained[-1]:
                assert "progress" in by_type and by_type["progress"].data == 100.0
            else:
                assert "progress" not in by_type
            summary = by_type["markdown"].data
            assert summary.startswith("# y ~ 1 + x")  # no ALERT line
            assert "exact least squares" in summary and "data:image/png;base64," in summary
            rows = json.loads(by_type["table"].data) if isinstance(by_type["table"].data, str) else by_type["table"].data
            assert [r["parameter"] for r in rows] == ["intercept", "x"]
    assert any(trained)  # the first run of the deployment has no earlier version to reuse
    versions = sorted(p for p in (served["work"] / "artifacts").iterdir() if p.is_dir() and not p.is_symlink())
    assert len(versions) >= 2
    drift = json.loads((versions[-1] / "coefficients.json").read_text())["drift"]
    assert drift["since"] == versions[-2].name and drift["max_abs_change"] == 0.0
    parameters = json.loads((versions[-1] / "manifest.json").read_text())["parameters"]
    assert parameters["max_drift"] == 0.0 and parameters["fail_on_drift"] is True


def test_serve_stops_cleanly_on_sigterm(server, tmp_path):
    """SIGTERM ends `linreg serve` with exit 0, like Ctrl-C."""
    url, home = server
    proc = subprocess.Popen(
        [str(BIN / "linreg"), "serve", str(SEED), "--cron", "0 6 * * *", "--name", "linreg-sigterm",
         "--artifacts-dir", str(tmp_path / "a"), "--data-dir", str(tmp_path / "d")],
        env=cli_env(home, url), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        with api_client(url) as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    client.read_deployment_by_name("linreg-regression/linreg-sigterm")
                    break
                except Exception:  # noqa: BLE001 - not registered yet
                    assert proc.poll() is None and time.monotonic() < deadline
                    time.sleep(0.5)
        os.killpg(proc.pid, 15)
        code = proc.wait(timeout=30)
        assert code == 0, proc.stdout.read().decode(errors="replace")[-3000:]
    finally:
        stop(proc)


def test_serve_without_a_server_is_a_clear_error(tmp_path):
    """No reachable API: exit 2 and one line naming PREFECT_API_URL."""
    done = subprocess.run(
        [str(BIN / "linreg"), "serve", str(SEED), "--interval", "5"],
        env=cli_env(tmp_path, "http://127.0.0.1:9/api"), capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "PREFECT_API_URL" in lines[0], done.stderr


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (.ci/run installs it)")
def test_the_ui_shows_the_coefficient_table_and_the_fit_plot(served, tmp_path):
    """Headless Chromium: the flow run's summary artifact shows the table and the fit image loads."""
    from playwright.sync_api import sync_playwright

    run = served["runs"][0]
    base = served["url"].removesuffix("/api")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
            "--disable-component-update", "--disable-sync"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(f"{base}/runs/flow-run/{run.id}", wait_until="networkidle")
            page.get_by_text("Artifacts", exact=True).first.click()
            page.get_by_text("linreg-summary").first.click()
            page.wait_for_url("**/artifacts/artifact/**")
            table = page.locator("table").first
            table.wait_for(timeout=30_000)
            text = table.inner_text()
            assert "exact least squares" in text and "torch SGD" in text and "intercept" in text
            fit = page.locator("img[alt=fit]")
            fit.wait_for(timeout=30_000)
            page.wait_for_function("() => document.querySelector('img[alt=fit]').complete", timeout=30_000)
            assert fit.evaluate("img => img.naturalWidth") > 0
            shot = tmp_path / "summary.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
        finally:
            browser.close()


# Names aimed at the UI's markdown: a table cell break, emphasis, code, HTML, a script link, a newline.
HOSTILE_TARGET = "y `tick` <b>bold</b> | *star*"
HOSTILE_FEATURES = ("<img src=x onerror=alert(1)>", "[link](javascript:alert(1))\nnext line",
                    "_under_ <script>alert(1)</script>")
HOSTILE_FILE = "data |*`<b>bold` <img src=x onerror=alert(1)> [link](javascript:alert(1))\nline.csv"
HOSTILE_FOLDER = "out [x](javascript:alert(1)) <b>|*`"
HOSTILE_ROWS = [(1, 5, 2, 2.0), (2, 3, 7, 3.5), (3, 8, 1, 4.1), (4, 1, 8, 6.0), (5, 7, 3, 7.2), (6, 2, 2, 7.9),
                (7, 9, 5, 9.4), (8, 4, 6, 9.8)]


def _shown(name: str) -> str:
    """How the UI must show a name: literally, a newline written as \\n."""
    return name.replace("\n", "\\n")


@pytest.fixture(scope="module")
def hostile_run(server, tmp_path_factory) -> dict:
    """`linreg run` against the module's server with hostile file, folder and column names; the
    summary and table artifacts of that flow run."""
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    url, home = server
    work = tmp_path_factory.mktemp("hostile") / HOSTILE_FOLDER
    work.mkdir()
    data = work / HOSTILE_FILE
    with open(data, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*HOSTILE_FEATURES, HOSTILE_TARGET])
        writer.writerows(HOSTILE_ROWS)
    done = subprocess.run(
        [str(BIN / "linreg"), "run", str(data), "--target", HOSTILE_TARGET, "--epochs", "200",
         "--artifacts-dir", str(work / "artifacts"), "--data-dir", str(work / "data")],
        env=cli_env(home, url), capture_output=True, text=True, timeout=600, cwd=work)
    assert done.returncode == 0, done.stderr[-3000:]
    version = Path(done.stdout.splitlines()[-1])
    with api_client(url) as client:
        summaries = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["linreg-summary"])))
        # The version's name is in the summary's file links (percent-encoding leaves it as it is).
        mine = [a for a in summaries if f"/{version.name}/" in a.data]
        assert len(mine) == 1, [a.data[-300:] for a in summaries]
        tables = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=["linreg-coefficients"]),
            flow_run_id=ArtifactFilterFlowRunId(any_=[mine[0].flow_run_id])))
    assert len(tables) == 1
    return {"base": url.removesuffix("/api"), "summary": mine[0].id, "table": tables[0].id}


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (.ci/run installs it)")
def test_the_ui_shows_hostile_names_as_literal_text(hostile_run, tmp_path):
    """Headless Chromium: names with |, *, `, <b>, <img onerror>, <script>, a javascript: link and a
    newline show as literal text in the summary's heading and table and in the table artifact; one
    row of nine cells per parameter; no element, emphasis, link or alert comes out of them."""
    from playwright.sync_api import sync_playwright

    names = ["intercept", *map(_shown, HOSTILE_FEATURES)]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            dialogs: list[str] = []
            page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
            base = f"{hostile_run['base']}/artifacts/artifact"
            page.goto(f"{base}/{hostile_run['summary']}", wait_until="networkidle")
            summary = page.locator(".artifact-data-markdown")
            summary.locator("table tbody tr").first.wait_for(timeout=60_000)
            cells = summary.locator("table tbody tr").evaluate_all(
                "rows => rows.map(r => Array.from(r.querySelectorAll('td'), td => td.textContent))")
            assert [len(row) for row in cells] == [9] * len(names), cells
            assert [row[0] for row in cells] == names
            heading = summary.locator("h1").inner_text()
            assert heading == f"{HOSTILE_TARGET} ~ 1 + " + " + ".join(names[1:])
            injected = summary.evaluate("""el => ({
                tags: el.querySelectorAll('b, i, script, iframe, [onerror], .markdown-renderer__html').length,
                images: Array.from(el.querySelectorAll('img'), img => img.getAttribute('src').slice(0, 22)),
                emphasis: el.querySelectorAll('.markdown-renderer__text--em, .markdown-renderer__codespan').length,
                strong: Array.from(el.querySelectorAll('.markdown-renderer__text--strong'), s => s.textContent),
                links: Array.from(document.querySelectorAll('a[href]'), a => [a.getAttribute('href'), a.textContent]),
            })""")
            assert injected["tags"] == 0 and injected["emphasis"] == 0, injected
            assert injected["images"] == ["data:image/png;base64,"] * 2, injected["images"]
            # Bold is only ours: the verdict, R² and warnings.
            ours = re.compile(r"Verdict: .*|[-+.e0-9]+|warning:")
            assert all(ours.fullmatch(text) for text in injected["strong"]), injected["strong"]
            scripted = [h for h, _ in injected["links"] if h.strip().lower().startswith("javascript:")]
            assert not scripted, injected["links"]
            # One link per file of the version: the plain name as its text, the URL percent-encoded.
            files = [(h, text) for h, text in injected["links"] if h.startswith("file://")]
            assert len(files) >= 6 and "manifest.json" in [text for _, text in files], files
            assert all(h.endswith("/" + text) and not re.search(r"[\\\s<>\[\]()|*`]", h)
                       for h, text in files), files
            shot = tmp_path / "hostile-summary.png"
            page.set_viewport_size({"width": 1400, "height": 2400})  # the UI scrolls inside its own panel
            summary.screenshot(path=str(shot))
            assert shot.stat().st_size > 10_000

            page.goto(f"{base}/{hostile_run['table']}", wait_until="networkidle")
            table = page.locator(".artifact-data-table table")
            table.locator("tbody tr").first.wait_for(timeout=60_000)
            headers = table.locator("thead th").all_inner_texts()
            rows = table.locator("tbody tr").evaluate_all(
                "rows => rows.map(r => Array.from(r.querySelectorAll('td'), td => td.textContent))")
            assert [len(row) for row in rows] == [len(headers)] * len(names), rows
            column = [h.strip().lower() for h in headers].index("parameter")
            assert [row[column] for row in rows] == names
            assert table.evaluate("el => el.querySelectorAll('b, i, img, script, a, [onerror]').length") == 0
            page.screenshot(path=str(tmp_path / "hostile-table.png"))
            assert not dialogs, dialogs
        finally:
            browser.close()


def test_prefect_yaml_deploys_to_a_process_work_pool(server, tmp_path):
    """`prefect deploy` with the shipped prefect.yaml, one run picked up by a process worker."""
    url, home = server
    env = cli_env(home, url)
    root = Path(__file__).resolve().parents[1]

    def prefect(*args: str, cwd: Path = root) -> subprocess.CompletedProcess:
        done = subprocess.run([str(BIN / "prefect"), *args], env=env | {"PWD": str(cwd)}, cwd=cwd,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        return done

    prefect("work-pool", "create", "linreg-process", "--type", "process", "--overwrite")
    prefect("--no-prompt", "deploy", "--all")
    config = {"data": str(SEED), "artifacts_dir": str(tmp_path / "artifacts"), "data_dir": str(tmp_path / "data")}
    prefect("deployment", "run", "linreg-regression/linreg-daily", "--param", f"config={json.dumps(config)}")
    # The worker runs from another folder: prefect.yaml's pull step brings it back to the project.
    prefect("worker", "start", "--pool", "linreg-process", "--run-once", cwd=tmp_path)
    versions = [p for p in (tmp_path / "artifacts").iterdir() if p.is_dir() and not p.is_symlink()]
    assert len(versions) == 1
    coef = json.loads((versions[0] / "coefficients.json").read_text())
    assert abs(coef["exact"]["coefficients"][0] - TUTORIAL_B1) < 1e-12
