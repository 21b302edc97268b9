"""Test session set-up: Prefect, matplotlib and result storage live in throw-away folders.

pytest imports this file before any test module, so the environment below is in place before
anything imports prefect or matplotlib (both read it at import time).
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

_SESSION_DIR = tempfile.mkdtemp(prefix="linreg-tests-")
atexit.register(shutil.rmtree, _SESSION_DIR, ignore_errors=True)


def _session_path(name: str) -> str:
    path = os.path.join(_SESSION_DIR, name)
    os.makedirs(path, exist_ok=True)
    return path


# Never the user's ~/.prefect, their profiles or a server they may have configured.
os.environ["PREFECT_HOME"] = _session_path("prefect-home")
os.environ.pop("PREFECT_API_URL", None)
os.environ.pop("PREFECT_PROFILES_PATH", None)
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["DO_NOT_TRACK"] = "1"
# Task results Prefect persists go here, not into ~/.prefect/storage.
os.environ["PREFECT_RESULTS_LOCAL_STORAGE_PATH"] = _session_path("prefect-results")
os.environ["MPLCONFIGDIR"] = _session_path("mplconfig")
os.environ["MPLBACKEND"] = "Agg"
os.environ.pop("LINREG_DEBUG", None)

import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

# In CI (CI=true) the property tests draw the same examples every run, so a red run replays; on a
# developer's machine they explore afresh each time.
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
    settings.load_profile("ci")


@pytest.fixture(autouse=True)
def _no_resident_server_outlives_its_test(request):
    """A `linreg run` leaves a local Prefect server for later runs (flows.resident): the ones whose
    PREFECT_HOME is in this test's tmp_path end with the test."""
    yield
    tmp = request.node.funcargs.get("tmp_path")
    if tmp is not None:
        from tests.prefect_server import stop_resident_servers

        stop_resident_servers(tmp)


@pytest.fixture(scope="session", autouse=True)
def _no_resident_server_outlives_the_session(tmp_path_factory):
    """The same for module- and session-scoped folders, at the end of the session."""
    yield
    from tests.prefect_server import stop_resident_servers

    stop_resident_servers(tmp_path_factory.getbasetemp())
    stop_resident_servers(Path(_SESSION_DIR))


@pytest.fixture(scope="session")
def prefect_harness():
    """A temporary Prefect API (SQLite in a temp folder) for tests that run the flow in-process.

    Not autouse: pure unit tests never pay for the server start.
    """
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        # No heartbeat thread: runs are short and the harness stops the server under it.
        with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            yield


@pytest.fixture(scope="session")
def shared_server(tmp_path_factory):
    """One real `prefect server start` (url, home) for the modules whose runs only read back their own
    results (NIST, time limits, crashes, every outcome through the CLI): one start instead of four.
    Modules that count what the server holds (alerts, serve and the UI) keep a server of their own."""
    from tests.prefect_server import prefect_server

    home = tmp_path_factory.mktemp("shared-prefect")
    with prefect_server(home) as url:
        yield url, home


# The tutorial's ten points (the same as data/seed.csv); its exact least-squares line is
# y = 0.7824239351471718 + 9.650293641652478 * x.
SEED_CSV = """x,y
1.05,10.3
1.54,15.4
2.01,21.2
2.55,25.4
3.13,30.1
3.45,35.6
4.02,40.5
4.65,43.4
5.34,50.1
5.50,56.6
"""


@pytest.fixture(scope="session")
def seed_csv_text() -> str:
    """The text of data/seed.csv, as a literal so tests do not depend on the working tree."""
    return SEED_CSV
