"""Which Prefect API a run talks to: the user's server, or a local one that later runs reuse.

With no PREFECT_API_URL, a run needs a local server on the SQLite database in PREFECT_HOME.
Prefect's answer is a temporary server per run, which costs ~8.5 s of every run on a 2-core machine.
Instead the first run starts that same server detached (flows.resident) and later runs with the
same PREFECT_HOME reuse it; it stops itself after LINREG_SERVER_IDLE_S seconds (default 300)
without a run, so there is nothing to start or stop by hand. LINREG_SERVER_IDLE_S=0 gives
Prefect's temporary server per run, as before.

What stays as it was for a first run on a small or busy machine:
- A new database takes ~24 s to migrate on a 2-core machine (8.5 s when it exists); Prefect waits
  20 s by default. We wait STARTUP_TIMEOUT_S unless the user set
  PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS (environment or profile), which wins.
- Runs started together on a new PREFECT_HOME: starts are serialized by an exclusive lock on a file
  in PREFECT_HOME, held until the server answers; the runs that waited then reuse that server.

At most one idle resident server per user is kept: a run that starts one stops the others that no
run is using (their lease is free), so many PREFECT_HOMEs (one per test, say) never pile up servers.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path

from flows.resident import (IDENTITY_PATH, LEASE_NAME, LOG_NAME, SERVER_ENV, STATE_NAME, forget, is_server, read_json,
                            registry)
from tasks.errors import UserInputError
from tasks.tempfiles import exclusive_lock

# Generous: a fresh database on a slow, busy machine; a user's own setting overrides it.
STARTUP_TIMEOUT_S = 180
LOCK_NAME = ".linreg-server-start.lock"
IDLE_ENV = "LINREG_SERVER_IDLE_S"
DEFAULT_IDLE_S = 300.0
# Open for the life of this process: a shared flock that keeps the reused server alive under a run.
_held: list = []


class BackendUnavailable(RuntimeError):
    """No Prefect API could be reached or started; the message says what to do."""


def startup_timeout(settings=None) -> float:
    """The user's PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS if they set it, else ours."""
    from prefect.settings import get_current_settings

    ephemeral = (settings or get_current_settings()).server.ephemeral
    if "startup_timeout_seconds" in ephemeral.model_fields_set:
        return float(ephemeral.startup_timeout_seconds)
    return float(STARTUP_TIMEOUT_S)


def idle_seconds() -> float:
    """LINREG_SERVER_IDLE_S: how long the reused server outlives the last run (0: no reuse)."""
    text = os.environ.get(IDLE_ENV, "").strip()
    try:
        value = float(text) if text else DEFAULT_IDLE_S
    except ValueError:
        value = float("nan")
    if not value >= 0 or value == float("inf"):
        raise UserInputError(f"{IDLE_ENV}={text!r}: expected seconds >= 0 (0: a temporary server per run)")
    return value


def _timed_out(timeout: float) -> BackendUnavailable:
    return BackendUnavailable(
        f"Prefect's local server did not answer within {timeout:g} s "
        "(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS). Start a server once with "
        "`make server` and run with PREFECT_API_URL=http://127.0.0.1:4200/api, or raise that timeout")


class PendingApi:
    """The API a run will use; wait() returns its URL (None: the user's PREFECT_API_URL)."""

    def __init__(self) -> None:
        self._stack = ExitStack()
        self._url: str | None = None
        self._started: tuple[subprocess.Popen, str] | None = None  # the server starting, its token
        self._home: Path | None = None
        self._idle = 0.0

    def wait(self) -> str | None:
        with self._stack:
            if self._started is not None:
                self._url = _await_start(*self._started, self._home, self._idle)
        return self._url


def prepare_api() -> PendingApi:
    """Find the server this run will use; when one must start, start it without waiting for it.

    The caller goes on (imports, set-up) while it starts, then calls wait().
    """
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, get_current_settings

    pending = PendingApi()
    if PREFECT_API_URL.value() or not get_current_settings().server.ephemeral.enabled:
        return pending
    idle = idle_seconds()
    if idle == 0:
        pending._url = temporary_server()
        return pending
    home = Path(PREFECT_HOME.value()).expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    lease = open(home / LEASE_NAME, "a")
    fcntl.flock(lease, fcntl.LOCK_SH)  # released when this process ends, however it ends
    _held.append(lease)
    pending._url = reachable(home)
    if pending._url is None:
        pending._stack.enter_context(exclusive_lock(home / LOCK_NAME))
        pending._url = reachable(home)
        if pending._url is None:
            stop_idle_servers(home)
            pending._home, pending._idle, pending._started = home, idle, _spawn(home, idle)
    return pending


def fingerprint() -> str:
    """The server settings this process would start a server with (all but the start-up timeout):
    a server started with other settings (another database, say) is not reused."""
    import hashlib

    from prefect.settings import get_current_settings

    server = get_current_settings().server.model_dump_json(exclude={"ephemeral"})
    return hashlib.sha256(server.encode()).hexdigest()[:16]


def reachable(home: Path, token: str | None = None) -> str | None:
    """The URL in home's state file when the server there was started with this process's server
    settings and answers with its token (and that token is `token`, when given)."""
    state = read_json(home / STATE_NAME)
    url, expected = state.get("url"), state.get("token")
    if not isinstance(url, str) or not expected or (token is not None and expected != token):
        return None
    if state.get("settings") != fingerprint():
        return None
    try:
        with urllib.request.urlopen(url.removesuffix("/api") + IDENTITY_PATH, timeout=10) as answer:
            return url if answer.read().decode() == expected else None
    except (OSError, ValueError):
        return None


def _spawn(home: Path, idle: float) -> tuple[subprocess.Popen, str]:
    from prefect.settings import get_current_settings

    token = secrets.token_hex(16)
    project = str(Path(__file__).resolve().parents[1])  # flows.resident importable however we run
    env = {**os.environ, **SERVER_ENV, **get_current_settings().to_environment_variables(exclude_unset=True),
           "PREFECT_HOME": str(home)}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (project, os.environ.get("PYTHONPATH")) if p)
    argv = [sys.executable, "-m", "flows.resident", "--home", str(home), "--token", token, "--idle", repr(idle),
            "--settings", fingerprint()]
    # In this run's folder, as Prefect's temporary server would be (relative settings resolve alike).
    with open(home / LOG_NAME, "ab") as log:  # appended: an older server may still be writing there
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True)
    return proc, token


def _await_start(proc: subprocess.Popen, token: str, home: Path, idle: float) -> str:
    timeout = startup_timeout()
    deadline = time.monotonic() + timeout
    while True:
        url = reachable(home, token)
        if url is not None:
            print(f"linreg: started a local Prefect server at {url} for PREFECT_HOME {home}; later runs "
                  f"reuse it and it stops after {idle:g} s without one ({IDLE_ENV})",
                  file=sys.stderr, flush=True)
            _held.append(proc)  # never waited for: it outlives this process
            return url
        if proc.poll() is not None:
            tail = (home / LOG_NAME).read_text(errors="replace").strip().splitlines()[-1:] or ["(empty log)"]
            raise BackendUnavailable(
                f"Prefect's local server exited with status {proc.returncode} as it started "
                f"(log {home / LOG_NAME}): {tail[0]}")
        if time.monotonic() > deadline:
            _kill(proc.pid, token)
            proc.wait()
            raise _timed_out(timeout)
        time.sleep(0.1)


def _kill(pid: int, token: str) -> None:
    """SIGTERM the resident server with this pid, if that pid is still it (its command line has the token)."""
    if is_server(pid, token):
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:  # it ended meanwhile
            pass


def stop_idle_servers(keep: Path) -> None:
    """Stop this user's resident servers of other PREFECT_HOMEs that no run is using."""
    try:
        entries = list(registry().glob("*.json"))
    except OSError:
        return
    for entry in entries:
        state = read_json(entry)
        home, token, pid = state.get("home"), state.get("token"), state.get("pid")
        if not (isinstance(home, str) and isinstance(token, str) and isinstance(pid, int)):
            continue
        if Path(home) == keep:
            continue
        if not is_server(pid, token):
            entry.unlink(missing_ok=True)
            continue
        try:
            with open(Path(home) / LEASE_NAME, "a") as lease:
                fcntl.flock(lease, fcntl.LOCK_EX | fcntl.LOCK_NB)
                forget(Path(home) / STATE_NAME, token)
                _kill(pid, token)
        except BlockingIOError:
            continue  # a run is using it
        except OSError:  # its PREFECT_HOME is gone: nothing can reuse it
            _kill(pid, token)


def temporary_server() -> str:
    """Prefect's temporary server for this process alone (LINREG_SERVER_IDLE_S=0), started safely."""
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_HOME

    server = SubprocessASGIServer()
    if server.running:
        return server.api_url
    timeout = startup_timeout()
    with exclusive_lock(Path(PREFECT_HOME.value()) / LOCK_NAME):
        try:
            server.start(timeout=int(max(1, timeout)))
        except RuntimeError as exc:
            server.stop()
            if "Timed out" not in str(exc):
                raise
            raise _timed_out(timeout) from None
    return server.api_url
