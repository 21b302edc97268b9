"""--train-timeout end to end: the real `linreg run` stops training at its time limit and says so.

One real Prefect server serves every run of this module, so a run takes seconds, not a server start.
"""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tasks.wording import counted
from tests.helpers import seed_workspace
from tests.prefect_server import BIN, cli_env


@pytest.fixture(scope="module")
def api_url(shared_server):
    return shared_server[0]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, seed_csv_text) -> Path:
    return seed_workspace(tmp_path_factory.mktemp("timeout-workspace"), seed_csv_text)


def linreg_run(api_url: str, root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "linreg"), "run", "data/seed.csv", *args, "--artifacts-dir", "artifacts",
         "--data-dir", "data"],
        cwd=root, env=cli_env(root / "home", api_url), capture_output=True, text=True,
        stdin=subprocess.DEVNULL, timeout=600,
    )


def version_of(done: subprocess.CompletedProcess) -> Path:
    assert done.returncode == 0, f"exit {done.returncode}\nstderr:\n{done.stderr[-3000:]}"
    return Path(done.stdout.strip().splitlines()[-1])


def test_an_endless_training_stops_at_train_timeout_and_the_run_succeeds(api_url, workspace):
    """1e8 momentum epochs with tol 0 and --train-timeout 0.5: exit 0, stop_reason "timeout", one
    loss per epoch done, and a verdict that names the limit."""
    done = linreg_run(api_url, workspace, "--train-timeout", "0.5", "--epochs", "100000000", "--tol", "0",
                      "--optimizer", "momentum")
    version = version_of(done)
    sgd = json.loads((version / "coefficients.json").read_text())["sgd"]
    assert sgd["stop_reason"] == "timeout"
    # A full-batch epoch always completes (the deadline is read after each one): at least one.
    assert 1 <= sgd["epochs"] < 100_000_000
    history = pq.read_table(io.BytesIO((version / "loss_history.parquet").read_bytes()))
    assert history.num_rows == sgd["epochs"]
    comparison = json.loads((version / "comparison.json").read_text())
    assert comparison["stop_reason"] == "timeout"
    # On a busy machine the set-up alone may take the half second: then one epoch ("1 epoch").
    epochs = counted(sgd["epochs"], "epoch")
    assert comparison["summary"].startswith(f"training stopped at its time limit (--train-timeout 0.5 s) after {epochs}")
    assert f"training: stopped after {epochs} (timeout)" in done.stderr


def test_a_normal_run_logs_no_warning(api_url, workspace):
    """The default run (a one-hour limit) prints no WARNING: no Prefect task timeout any more."""
    done = linreg_run(api_url, workspace)
    version_of(done)
    assert "Finished in state Completed" in done.stderr  # the logs did reach stderr
    warnings = [line for line in done.stderr.splitlines() if "WARNING" in line]
    assert not warnings, warnings
