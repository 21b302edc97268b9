"""Which Prefect API a run talks to: the user's server, or a temporary one started safely here.

With no PREFECT_API_URL, Prefect starts a temporary server on its SQLite database in PREFECT_HOME.
Two things break on a small or busy machine, and both are handled here:
- A new database takes ~24 s to migrate on a 2-core machine (8.5 s when it exists); Prefect waits
  20 s by default. We wait STARTUP_TIMEOUT_S unless the user set
  PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS (environment or profile), which wins.
- Several runs at once that share PREFECT_HOME each start a server, and each server migrates the
  same database on start: concurrent migrations fail ("duplicate column name"). Starts are
  serialized by an exclusive lock on a file in PREFECT_HOME, held until the server answers; once
  up, servers share the database safely (WAL mode, 60 s busy timeout).
"""

from __future__ import annotations

from pathlib import Path

from tasks.tempfiles import exclusive_lock

# Generous: a fresh database on a slow, busy machine; a user's own setting overrides it.
STARTUP_TIMEOUT_S = 180
LOCK_NAME = ".linreg-server-start.lock"


class BackendUnavailable(RuntimeError):
    """No Prefect API could be reached or started; the message says what to do."""


def startup_timeout(settings=None) -> float:
    """The user's PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS if they set it, else ours."""
    from prefect.settings import get_current_settings

    ephemeral = (settings or get_current_settings()).server.ephemeral
    if "startup_timeout_seconds" in ephemeral.model_fields_set:
        return float(ephemeral.startup_timeout_seconds)
    return float(STARTUP_TIMEOUT_S)


def ensure_api() -> str | None:
    """Start Prefect's temporary server when no API is configured; return its URL (None: the user's).

    Prefect's clients reuse this process's server instance, so the flow run talks to it.
    """
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, get_current_settings

    if PREFECT_API_URL.value() or not get_current_settings().server.ephemeral.enabled:
        return None
    from prefect.server.api.server import SubprocessASGIServer

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
            raise BackendUnavailable(
                f"Prefect's temporary server did not answer within {timeout:g} s "
                "(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS). Start a server once with "
                "`make server` and run with PREFECT_API_URL=http://127.0.0.1:4200/api, "
                "or raise that timeout") from None
    return server.api_url
