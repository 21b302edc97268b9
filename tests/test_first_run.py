"""A user's first run: a new PREFECT_HOME, the local server (reused, or temporary per run), a slow or busy machine.

The temporary server's start is made slow on purpose, not by luck of timing: a sitecustomize.py
on PYTHONPATH sleeps in the server process only (Prefect marks it with PREFECT__SERVER_EPHEMERAL=1),
so the start takes longer than Prefect's own 20 s default on any machine.
"""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from flows.resident import STATE_NAME
from tests.prefect_server import BIN, cli_env

SEED = Path(__file__).resolve().parents[1] / "data" / "seed.csv"
SLOW_START = """import os, time
if os.environ.get("PREFECT__SERVER_EPHEMERAL") == "1":
    time.sleep(float(os.environ["LINREG_TEST_SERVER_DELAY_S"]))
"""


def prefect_default_startup_timeout() -> float:
    from prefect.settings.models.server.ephemeral import ServerEphemeralSettings

    return float(ServerEphemeralSettings.model_fields["startup_timeout_seconds"].default)


def first_run_env(tmp_path: Path, delay: float | None = None, idle: str | None = None) -> dict[str, str]:
    """A new user's environment: a new PREFECT_HOME, no API URL, no timeout of their own; `idle`:
    LINREG_SERVER_IDLE_S ("0": Prefect's temporary server per run)."""
    env = cli_env(tmp_path / "home")
    env.pop("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", None)
    if idle is not None:
        env["LINREG_SERVER_IDLE_S"] = idle
    if delay is not None:
        hook = tmp_path / "hook"
        hook.mkdir()
        (hook / "sitecustomize.py").write_text(SLOW_START)
        env |= {"PYTHONPATH": str(hook), "LINREG_TEST_SERVER_DELAY_S": str(delay)}
    return env


def run(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "linreg"), "run", str(SEED), "--artifacts-dir", str(tmp_path / "artifacts"),
         "--data-dir", str(tmp_path / "data")],
        env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=600, cwd=tmp_path)


def versions(artifacts: Path) -> list[Path]:
    return sorted(p for p in artifacts.iterdir() if p.is_dir() and not p.is_symlink() and not p.name.startswith("."))


IDLE = pytest.mark.parametrize("idle", [None, "0"], ids=["reused-server", "temporary-server"])


@IDLE
def test_a_temporary_server_slower_than_prefects_default_still_serves_the_run(tmp_path, idle):
    """The server answers after more than Prefect's 20 s default: the run waits for it and succeeds."""
    delay = prefect_default_startup_timeout() + 2
    done = run(tmp_path, first_run_env(tmp_path, delay, idle))
    assert done.returncode == 0, done.stderr[-3000:]
    path = Path(done.stdout.splitlines()[-1])
    assert path.is_dir() and path.parent == (tmp_path / "artifacts").resolve()


@IDLE
def test_a_users_own_startup_timeout_wins_and_a_failed_start_says_what_to_do(tmp_path, idle):
    """PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS set by the user is obeyed; when the server
    does not answer in time: exit 1, one line naming the setting and `make server`, no traceback,
    nothing written."""
    env = first_run_env(tmp_path, 30, idle) | {"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "2"}
    done = run(tmp_path, env)
    assert done.returncode == 1, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("linreg: failed:") and "within 2 s" in last
    assert "make server" in last and "PREFECT_API_URL" in last
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "artifacts").exists() or not versions(tmp_path / "artifacts")
    assert not (tmp_path / "home" / STATE_NAME).exists()  # the server that never answered was ended


@IDLE
def test_runs_started_together_on_a_new_prefect_home_all_succeed(tmp_path, idle):
    """Four `linreg run` at once share a new PREFECT_HOME (one new SQLite database), the artifacts
    folder and the data folder: one starts the local server and the others reuse it, all exit 0 with
    four distinct complete versions, the stored Parquet is written once, and the drift chain is
    unbroken. With LINREG_SERVER_IDLE_S=0 each starts a temporary server of its own on that
    database, and the same holds."""
    env = first_run_env(tmp_path, idle=idle)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: run(tmp_path, env), range(4)))
    for done in results:
        assert done.returncode == 0, done.stderr[-3000:]
        assert "Traceback" not in done.stderr, done.stderr[-3000:]
    # One of them started the local server; the others waited for it and reused it.
    assert sum("linreg: started a local Prefect server" in done.stderr for done in results) == (idle is None)
    paths = {Path(done.stdout.splitlines()[-1]).name for done in results}
    found = versions(tmp_path / "artifacts")
    assert paths == {p.name for p in found} and len(found) == 4
    stored = list((tmp_path / "data" / "validated").glob("*.parquet"))
    assert len(stored) == 1 and pq.read_table(stored[0]).num_rows == 10
    # Each version's drift is measured against the version published just before it.
    since = [json.loads((p / "coefficients.json").read_text())["drift"]["since"] for p in found]
    assert since == [None] + [p.name for p in found[:-1]]


@pytest.mark.parametrize("setting", ["5", None])
def test_the_startup_timeout_is_the_users_or_a_generous_default(setting, monkeypatch):
    """flows.backend.startup_timeout: the user's value when set, else one well above Prefect's 20 s."""
    from prefect.settings import Settings

    from flows.backend import STARTUP_TIMEOUT_S, startup_timeout

    if setting is None:
        monkeypatch.delenv("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", raising=False)
        assert startup_timeout(Settings()) == STARTUP_TIMEOUT_S >= 3 * prefect_default_startup_timeout()
    else:
        monkeypatch.setenv("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", setting)
        assert startup_timeout(Settings()) == 5.0
