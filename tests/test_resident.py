"""The local Prefect server a run leaves for later runs (flows.resident, flows.backend).

What must hold on any machine, however slow: a second run on the same PREFECT_HOME reuses the server
the first started; a server never stops under a run; it stops by itself once no run has used it for
LINREG_SERVER_IDLE_S; a state file naming a dead or foreign server is never trusted; a new server
stops the idle servers of other homes and never one in use. A test that needs a server to stay up
between two runs holds the lease the way a run does (in_use), so that no other test can stop it.
"""

from __future__ import annotations

import fcntl
import http.server
import json
import subprocess
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from flows.backend import IDLE_ENV
from flows.resident import LEASE_NAME, LOG_NAME, STATE_NAME, is_server, read_json, registry
from tests.prefect_server import BIN, cli_env, free_port

SEED = Path(__file__).resolve().parents[1] / "data" / "seed.csv"
STARTED = "linreg: started a local Prefect server"
STOP_WAIT_S = 180  # generous: a loaded machine; the test fails only if the server never stops


def linreg_run(root: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "linreg"), "run", str(SEED), "--artifacts-dir", str(root / "artifacts"),
         "--data-dir", str(root / "data"), *args],
        env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=600, cwd=root)


def ok(done: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert done.returncode == 0, done.stderr[-3000:]
    assert Path(done.stdout.splitlines()[-1]).is_dir()
    return done


@contextmanager
def in_use(home: Path):
    """Hold home's lease as a run does: its server cannot stop meanwhile."""
    home.mkdir(parents=True, exist_ok=True)
    with open(home / LEASE_NAME, "a") as lease:
        fcntl.flock(lease, fcntl.LOCK_SH)
        yield


def wait_stopped(state: dict) -> bool:
    deadline = time.monotonic() + STOP_WAIT_S
    while is_server(state["pid"], state["token"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    return not is_server(state["pid"], state["token"])


def test_a_second_run_reuses_the_server_the_first_started(tmp_path):
    home = tmp_path / "home"
    env = cli_env(home)
    with in_use(home):
        first = ok(linreg_run(tmp_path, env))
        assert STARTED in first.stderr
        state = read_json(home / STATE_NAME)
        assert is_server(state["pid"], state["token"]), "the server ends with the run that started it"
        second = ok(linreg_run(tmp_path, env))
        assert STARTED not in second.stderr, second.stderr[-2000:]
        assert read_json(home / STATE_NAME) == state and is_server(state["pid"], state["token"])
    assert first.stdout.splitlines()[-1] != second.stdout.splitlines()[-1]
    # No link to a UI the local server does not serve.
    assert "View at" not in first.stderr + second.stderr


def test_the_server_stops_by_itself_once_no_run_used_it_for_the_idle_time(tmp_path):
    home = tmp_path / "home"
    ok(linreg_run(tmp_path, cli_env(home) | {IDLE_ENV: "1"}))
    state = read_json(home / STATE_NAME)
    assert wait_stopped(state), f"still running after {STOP_WAIT_S} s without a run"
    assert not (home / STATE_NAME).exists()
    assert not (registry() / f"{state['token']}.json").exists()
    log = (home / LOG_NAME).read_text()
    assert "stopping: no run for" in log or "stopping: signal" in log, log[-2000:]


def test_a_run_longer_than_the_idle_time_keeps_its_server(tmp_path):
    """Idle 0.5 s, a training that lasts 3 s: the server outlives it, so the run completes."""
    home = tmp_path / "home"
    done = ok(linreg_run(tmp_path, cli_env(home) | {IDLE_ENV: "0.5"},
                         "--epochs", "100000000", "--tol", "0", "--train-timeout", "3"))
    path = Path(done.stdout.splitlines()[-1])
    assert json.loads((path / "coefficients.json").read_text())["sgd"]["stop_reason"] == "timeout"


class Foreign(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"someone else")

    def log_message(self, *args):
        pass


def test_a_dead_or_foreign_server_in_the_state_file_is_not_used(tmp_path):
    """The state file names a port where another program answers, and a process that is gone."""
    home = tmp_path / "home"
    home.mkdir()
    foreign = http.server.HTTPServer(("127.0.0.1", free_port()), Foreign)
    threading.Thread(target=foreign.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{foreign.server_port}/api"
        stale = {"pid": 2**22 + 7, "url": url, "token": "0" * 32, "home": str(home), "idle_s": 300,
                 "settings": fingerprint(cli_env(home))}
        (home / STATE_NAME).write_text(json.dumps(stale))
        with in_use(home):
            done = ok(linreg_run(tmp_path, cli_env(home)))
            assert STARTED in done.stderr
            assert read_json(home / STATE_NAME)["url"] != url
    finally:
        foreign.shutdown()
        foreign.server_close()


def fingerprint(env: dict[str, str]) -> str:
    """flows.backend.fingerprint() as a run with this environment computes it."""
    code = "from flows.backend import fingerprint; print(fingerprint())"
    return subprocess.run([str(BIN / "python"), "-c", code], env=env, capture_output=True, text=True,
                          check=True, timeout=120).stdout.strip()


def test_a_run_with_other_server_settings_starts_its_own_server_and_the_old_one_goes(tmp_path):
    home = tmp_path / "home"
    with in_use(home):
        ok(linreg_run(tmp_path, cli_env(home)))
        old = read_json(home / STATE_NAME)
        done = ok(linreg_run(tmp_path, cli_env(home) | {"PREFECT_SERVER_LOGGING_LEVEL": "ERROR"}))
        assert STARTED in done.stderr
        new = read_json(home / STATE_NAME)
        assert new["token"] != old["token"] and new["settings"] != old["settings"]
    assert wait_stopped(old)  # its state file names another server: it goes once no run holds the lease


def test_idle_zero_is_a_temporary_server_per_run(tmp_path):
    home = tmp_path / "home"
    done = ok(linreg_run(tmp_path, cli_env(home) | {IDLE_ENV: "0"}))
    assert STARTED not in done.stderr
    assert not (home / STATE_NAME).exists()
    from tests.prefect_server import resident_servers

    assert resident_servers(tmp_path) == []


@pytest.mark.parametrize("value", ["soon", "-1", "nan", "inf"])
def test_a_bad_idle_setting_is_exit_2_naming_it_before_anything_is_written(tmp_path, value):
    done = linreg_run(tmp_path, cli_env(tmp_path / "home") | {IDLE_ENV: value})
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and IDLE_ENV in lines[0] and lines[0].startswith("linreg: error:")
    assert not (tmp_path / "artifacts").exists() and not (tmp_path / "data").exists()


def test_a_new_server_stops_the_idle_servers_of_other_homes_and_never_one_in_use(tmp_path):
    """Three PREFECT_HOMEs (one database, so it is migrated once): the servers of `idle` and `busy`
    run; a run on `new` starts its own, which stops the one of `idle` and not the one of `busy`."""
    db = f"sqlite+aiosqlite:///{tmp_path / 'prefect.db'}"
    env = {name: cli_env(tmp_path / name) | {"PREFECT_API_DATABASE_CONNECTION_URL": db}
           for name in ("idle", "busy", "new")}
    with in_use(tmp_path / "busy"), in_use(tmp_path / "new"):
        ok(linreg_run(tmp_path, env["busy"]))
        ok(linreg_run(tmp_path, env["idle"]))  # its server is idle once the run ends
        idle, busy = read_json(tmp_path / "idle" / STATE_NAME), read_json(tmp_path / "busy" / STATE_NAME)
        assert is_server(busy["pid"], busy["token"])
        done = ok(linreg_run(tmp_path, env["new"]))
        assert STARTED in done.stderr
        assert wait_stopped(idle)
        assert is_server(busy["pid"], busy["token"]) and read_json(tmp_path / "busy" / STATE_NAME) == busy
        new = read_json(tmp_path / "new" / STATE_NAME)
        assert is_server(new["pid"], new["token"])
