"""A real Prefect server on a free loopback port, started and stopped by PID, for tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cli_env(home: Path, api_url: str | None = None) -> dict[str, str]:
    """The environment for subprocesses: Prefect state in `home`, no analytics, Agg backend."""
    env = dict(os.environ)
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1",
               MPLBACKEND="Agg", MPLCONFIGDIR=str(home / "mpl"), PYTHONUNBUFFERED="1")
    env.pop("PREFECT_API_URL", None)
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


def stop(proc: subprocess.Popen, timeout: float = 20) -> None:
    """SIGTERM the process group by its PID, then SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)
    except ProcessLookupError:
        pass


def api_client(url: str):
    """A sync Prefect client for `url` (settings read at call time, not from the test process)."""
    from prefect.client.orchestration import SyncPrefectClient

    return SyncPrefectClient(api=url)


@contextmanager
def prefect_server(home: Path, startup_timeout: float = 120):
    """Yield the API URL of a fresh `prefect server start` (SQLite under `home`)."""
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = open(home / "server.log", "wb")
    url = f"http://127.0.0.1:{port}/api"
    # The UI asks the API at this address (by default it assumes port 4200).
    env = cli_env(home) | {"PREFECT_SERVER_UI_API_URL": url}
    proc = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"prefect server exited: {(home / 'server.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("prefect server did not become healthy in time")
            time.sleep(0.5)
        yield url
    finally:
        stop(proc)
        log.close()


def resident_servers(under: Path) -> list[dict]:
    """The registry entries (flows.resident) of the resident servers whose PREFECT_HOME is inside `under`."""
    from flows.resident import read_json, registry

    under = under.resolve()
    found = []
    for entry in sorted(registry().glob("*.json")) if registry().is_dir() else ():
        state = read_json(entry)
        home = state.get("home")
        if isinstance(home, str) and Path(home).resolve().is_relative_to(under):
            found.append(state)
    return found


def stop_resident_servers(under: Path, timeout: float = 30) -> None:
    """End, by PID, the resident servers that runs with a PREFECT_HOME inside `under` left behind."""
    from flows.resident import is_server

    for state in resident_servers(under):
        pid, token = state["pid"], state["token"]
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if is_server(pid, token):
                os.kill(pid, sig)
            deadline = time.monotonic() + timeout
            while is_server(pid, token) and time.monotonic() < deadline:
                time.sleep(0.1)
