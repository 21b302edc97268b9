"""The local Prefect server that later runs reuse: started by a `linreg run`, gone when idle.

flows.backend starts it (`python -m flows.resident --home HOME --token TOKEN --idle SECONDS
--settings FINGERPRINT`) detached from the run: its own session, no inherited pipes, its output in
HOME/.linreg-server.log. It is Prefect's temporary server (the same app and settings, the SQLite database in PREFECT_HOME,
no background services, no UI), kept alive between runs:

- it binds a free loopback port itself and, once the API answers (migrations done), writes its
  state file HOME/.linreg-server.json (pid, url, token, the fingerprint of its server settings) and
  an entry in the user's registry;
- GET /linreg-resident answers the token, so a client never mistakes another process that took
  the port of a dead server for this one;
- every run holds a shared flock on HOME/.linreg-server.lease from before it reads the state file
  until it exits. Once a second, the server tries that lock exclusively: it stops when it gets it
  and either no run has held it for IDLE seconds or its state file names another server. It
  removes its state file while it holds the lock, so no run can pick it up as it goes.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import json
import os
import signal
import socket
import time
from pathlib import Path

POLL_S = 1.0
STATE_NAME = ".linreg-server.json"
LEASE_NAME = ".linreg-server.lease"
LOG_NAME = ".linreg-server.log"
IDENTITY_PATH = "/linreg-resident"
# Prefect's own temporary server runs with these (prefect.server.api.server.SubprocessASGIServer).
SERVER_ENV = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}


def registry() -> Path:
    """The user's folder of running servers, one `<token>.json` each (machine-wide, any PREFECT_HOME)."""
    import tempfile

    return Path(tempfile.gettempdir()) / f"linreg-servers-{os.getuid()}"


def read_json(path: Path) -> dict:
    """The JSON object in the file, or {} when it is missing, partial or not an object."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def write_json(path: Path, value: dict) -> None:
    """Readers see the whole file or none (write aside, then rename)."""
    part = path.with_name(f".{path.name}.{os.getpid()}.part")
    part.write_text(json.dumps(value))
    os.replace(part, path)


def forget(path: Path, token: str) -> None:
    """Remove the state or registry file at path if it still names this token."""
    if read_json(path).get("token") == token:
        path.unlink(missing_ok=True)


def is_server(pid: int, token: str) -> bool:
    """Whether pid still runs the resident server with this token (its command line holds it): a
    pid the system has given to another process is not it."""
    try:
        return token.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def with_identity(app, token: str):
    """The ASGI app, plus GET IDENTITY_PATH answering this server's token."""
    body = token.encode()

    async def wrapped(scope, receive, send):
        if scope["type"] == "http" and scope["path"] == IDENTITY_PATH:
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": body})
            return
        await app(scope, receive, send)

    return wrapped


def try_stop(home: Path, token: str, idle_since: float, idle: float) -> bool | None:
    """One look at the lease: None when a run holds it; else whether to stop now (state file removed)."""
    try:
        lease = open(home / LEASE_NAME, "a")
    except FileNotFoundError:  # PREFECT_HOME was deleted: nothing can reuse this server
        print("stopping: its PREFECT_HOME is gone", flush=True)
        return True
    with lease:
        try:
            fcntl.flock(lease, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None
        ours = read_json(home / STATE_NAME).get("token") == token
        if ours and time.monotonic() - idle_since < idle:
            return False
        print(f"stopping: no run for {time.monotonic() - idle_since:.0f} s" if ours else
              "stopping: its state file names another server", flush=True)
        forget(home / STATE_NAME, token)
        return True


async def serve(home: Path, token: str, idle: float, settings: str) -> None:
    import uvicorn
    from prefect.server.api.server import create_app

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/api"
    config = uvicorn.Config(with_identity(create_app(), token), lifespan="on", log_level="error")
    server = uvicorn.Server(config)
    running = asyncio.ensure_future(server.serve(sockets=[sock]))
    while not server.started:
        if running.done():
            return await running  # the start failed: its error is in the log
        await asyncio.sleep(0.05)
    state = {"pid": os.getpid(), "url": url, "token": token, "home": str(home), "idle_s": idle,
             "settings": settings}
    registry().mkdir(mode=0o700, exist_ok=True)
    write_json(registry() / f"{token}.json", state)
    write_json(home / STATE_NAME, state)
    idle_since = time.monotonic()
    while not running.done():
        await asyncio.sleep(POLL_S)
        verdict = try_stop(home, token, idle_since, idle)
        if verdict is None:
            idle_since = time.monotonic()
        elif verdict:
            server.should_exit = True
    await running


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--idle", type=float, required=True)
    parser.add_argument("--settings", required=True, help="the fingerprint of the server settings it runs with")
    args = parser.parse_args()
    # uvicorn hands SIGTERM/SIGINT back to these once it has shut down: the files go in `finally`.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit)
    try:
        asyncio.run(serve(args.home, args.token, args.idle, args.settings))
    finally:
        forget(args.home / STATE_NAME, args.token)
        forget(registry() / f"{args.token}.json", args.token)


def _exit(signum, frame) -> None:
    print(f"stopping: signal {signal.Signals(signum).name}", flush=True)
    raise SystemExit(0)


if __name__ == "__main__":
    main()
