"""--dask: passes run part by part as Prefect tasks on real Dask clusters and equal the local pass.

Oracle: the same design's geometry in this process, one part (local_map), and numpy's lstsq.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import cloudpickle
import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext
from prefect.task_runners import ThreadPoolTaskRunner

from flows.dask import cluster, parts_for, scheduler, task_map
from tasks.errors import UserInputError
from tasks.kernels.design import Design, scaled_basis
from tasks.kernels.passes import Passes
from tasks.kernels.table import ArrayTable, ParquetTable
from tasks.kernels.tsqr import Geometry, design_geometry, partial_geometry

REPO = Path(__file__).resolve().parents[1]
COLUMNS = ("y", "x1", "x2", "x3")
ROWS, ROW_GROUP = 2000, 250  # 8 row groups: 4 parts of 2 each
DEADLINE = 120.0  # seconds; processes start slowly on a busy 2-core machine


def _data() -> np.ndarray:
    """(ROWS, 4): y first, then three correlated features with offsets (a non-trivial basis)."""
    rng = np.random.default_rng(8)
    mix = np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 0.3], [0.0, 0.0, 1.0]])
    X = rng.normal(size=(ROWS, 3)) @ mix + [3.0, -2.0, 50.0]
    y = 1.5 + X @ np.array([2.0, -1.0, 0.25]) + rng.normal(scale=0.1, size=ROWS)
    return np.column_stack([y, X])


def _write_parquet(folder: Path) -> str:
    path = folder / "data.parquet"
    pq.write_table(pa.table(dict(zip(COLUMNS, _data().T))), path, row_group_size=ROW_GROUP)
    return str(path)


def _parquet_design(path: str, degree: int = 1) -> Design:
    """y on x1, x2, x3; or on x1, x1^2, ..., x1^degree (terms whose statistics the pass merges)."""
    columns = COLUMNS if degree == 1 else COLUMNS[:2]
    table = ParquetTable(path, columns, ROWS, ArrayTable(_data()[:, :len(columns)], columns).stats)
    return Design(table, columns[1:], "y", degree=degree)


def _with_pid(fn: Callable, part: Design) -> tuple[int, object]:
    return os.getpid(), fn(part)


def _geometry_with_pids(path: str, degree: int = 1) -> tuple[Geometry, list[int]]:
    """design_geometry over 4 parts through task_map, and the process id that ran each part."""
    pids: list[int] = []

    def mapper(fn, parts):
        results = task_map(partial(_with_pid, fn), parts)
        pids.extend(pid for pid, _ in results)
        return [result for _, result in results]

    return design_geometry(_parquet_design(path, degree), passes=Passes(mapper, 4)), pids


def _refuse(row: int) -> None:
    raise UserInputError(f"file data.parquet: row {row} is bad")


@task(name="geometry-on-a-worker", cache_policy=NO_CACHE)
def geometry_task(path: str) -> tuple[Geometry, list[int], int]:
    """A step submitted to the cluster whose pass submits its parts in turn."""
    return *_geometry_with_pids(path), os.getpid()


@flow(name="dask-geometry")
def geometry_flow(path: str, nested: bool = False) -> dict:
    geometry, pids = _geometry_with_pids(path)
    polynomial, polynomial_pids = _geometry_with_pids(path, degree=3)
    runner = FlowRunContext.get().task_runner
    out = {"geometry": geometry, "polynomial": polynomial, "pids": pids + polynomial_pids,
           "parts": parts_for(), "workers": set(runner.client.run(os.getpid).values())}
    try:
        task_map(_refuse, [7])
    except UserInputError as exc:  # a user's mistake found on a worker stays one (exit 2)
        out["error"] = str(exc)
    if nested:
        out["nested"] = geometry_task.submit(path).result(timeout=DEADLINE)
    return out


def _assert_same_geometry(actual: Geometry, expected: Geometry, design: Design) -> None:
    """R and Q^T y up to the signs of R's rows, the solution and the terms' statistics, to float64
    rounding; the solution also against numpy's lstsq of the whole matrix."""
    def normalized(g: Geometry) -> tuple[np.ndarray, np.ndarray]:
        signs = np.sign(np.diag(g.R))
        return signs[:, None] * g.R, signs * g.qty

    (R, qty), (R0, qty0) = normalized(actual), normalized(expected)
    assert np.abs(R - R0).max() <= 1e-12 * np.abs(R0).max()
    assert np.abs(qty - qty0).max() <= 1e-12 * np.abs(qty0).max()
    beta, beta0 = actual.initial_solution(), expected.initial_solution()
    assert np.abs(beta - beta0).max() <= 1e-12 * np.abs(beta0).max()
    oracle = np.linalg.lstsq(design.matrix(), design.y, rcond=None)[0]
    assert np.abs(beta - oracle).max() <= 1e-9 * np.abs(oracle).max()
    assert actual.terms.count == expected.terms.count == ROWS
    np.testing.assert_allclose(actual.terms.mean, expected.terms.mean, rtol=1e-13)
    np.testing.assert_allclose(actual.terms.m2, expected.terms.m2, rtol=1e-12)


def test_a_pass_and_its_parts_survive_pickling_unchanged(tmp_path):
    """What task_map ships to workers (the kernel partial and Parquet or in-memory parts) pickles."""
    path = _write_parquet(tmp_path)
    in_memory = Design(ArrayTable(_data(), COLUMNS, block_rows=3), COLUMNS[1:], "y")
    for design in (_parquet_design(path), _parquet_design(path, degree=3), in_memory):
        fn = partial(partial_geometry, scaled_basis(design))
        for part in design.split(4):
            R, terms = fn(part)
            R2, terms2 = cloudpickle.loads(cloudpickle.dumps(fn))(cloudpickle.loads(cloudpickle.dumps(part)))
            assert np.array_equal(R, R2)
            assert (terms is None and terms2 is None) or terms.to_json() == terms2.to_json()
    assert parts_for(ThreadPoolTaskRunner()) == 1


def test_a_local_cluster_of_two_worker_processes_gives_the_local_geometry(prefect_harness, tmp_path):
    path = _write_parquet(tmp_path)
    workers: set[int] = set()
    try:
        with cluster(None) as (runner, _):
            out = geometry_flow.with_options(task_runner=runner)(path)
        workers = out["workers"]
        assert len(workers) == 2 and os.getpid() not in workers
        assert set(out["pids"]) <= workers and len(out["pids"]) == 8
        assert out["parts"] == 4  # two per worker thread
        assert out["error"] == "file data.parquet: row 7 is bad"
        for key, degree in (("geometry", 1), ("polynomial", 3)):
            design = _parquet_design(path, degree)
            _assert_same_geometry(out[key], design_geometry(design), design)
        # The end of the run's cluster() closes the cluster it started: its workers exit.
        deadline = time.monotonic() + DEADLINE
        while any(psutil.pid_exists(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(psutil.pid_exists(pid) for pid in workers)
    finally:
        for pid in workers:
            _kill(pid)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@contextmanager
def _dask_processes(logs: Path) -> Iterator[Callable[..., subprocess.Popen]]:
    """start(*args) runs `.venv/bin/dask *args` (tests importable there); all are ended on exit."""
    started: list[subprocess.Popen] = []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}

    def start(*args: str) -> subprocess.Popen:
        log = open(logs / f"dask-{args[0]}-{len(started)}.log", "wb")
        process = subprocess.Popen([str(Path(sys.executable).parent / "dask"), *args], cwd=REPO, env=env,
                                   stdout=log, stderr=subprocess.STDOUT)
        log.close()
        started.append(process)
        return process

    try:
        yield start
    finally:
        for process in reversed(started):  # workers first, then the scheduler
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _address_in(scheduler_file: Path, scheduler: subprocess.Popen) -> str:
    """The address the scheduler writes once it listens (it picked a free port)."""
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        assert scheduler.poll() is None, "dask scheduler exited"
        try:
            return json.loads(scheduler_file.read_text())["address"]
        except (OSError, ValueError, KeyError):
            time.sleep(0.1)
    raise AssertionError(f"no scheduler file after {DEADLINE} s")


def test_a_scheduler_address_runs_the_parts_of_a_pass_on_its_workers(prefect_harness, tmp_path):
    """`dask scheduler` + `dask worker ADDRESS` processes: the pass's parts run on the worker, also
    when the pass runs inside a step that was itself submitted to the cluster's one thread."""
    path = _write_parquet(tmp_path)
    scheduler_file = tmp_path / "scheduler.json"
    with _dask_processes(tmp_path) as start:
        process = start("scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                        "--scheduler-file", str(scheduler_file))
        address = _address_in(scheduler_file, process)
        with pytest.raises(UserInputError, match="no Dask scheduler with a worker"):
            scheduler(address, timeout=1)  # none has joined yet
        worker = start("worker", address, "--no-nanny", "--nthreads", "1", "--no-dashboard", "--host",
                       "127.0.0.1", "--death-timeout", str(DEADLINE), "--local-directory", str(tmp_path / "w"))
        assert scheduler(str(scheduler_file), timeout=DEADLINE) == address  # waits for the worker
        with cluster(str(scheduler_file), timeout=DEADLINE) as (runner, _):
            out = geometry_flow.with_options(task_runner=runner)(path, nested=True)
    assert out["workers"] == {worker.pid} and set(out["pids"]) == {worker.pid}
    assert out["parts"] == 2
    design = _parquet_design(path)
    expected = design_geometry(design)
    _assert_same_geometry(out["geometry"], expected, design)
    polynomial = _parquet_design(path, 3)
    _assert_same_geometry(out["polynomial"], design_geometry(polynomial), polynomial)
    nested, nested_pids, step_pid = out["nested"]
    assert step_pid == worker.pid and set(nested_pids) == {worker.pid}
    _assert_same_geometry(nested, expected, design)


@pytest.mark.parametrize("address, says", [
    ("nonsense", "not a Dask scheduler address"),
    ("127.0.0.1:port", "not a Dask scheduler address"),
    ("missing/scheduler.json", "not a readable Dask scheduler file"),
    ("tcp://127.0.0.1:{free}", "no Dask scheduler with a worker answered"),
])
def test_a_bad_dask_address_is_a_user_error_naming_the_option_and_address(address, says):
    import socket

    with socket.socket() as probe:  # a port nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    address = address.format(free=free)
    with pytest.raises(UserInputError, match=f"^option --dask {address}: {says}"):
        scheduler(address, timeout=1)


def test_linreg_run_dask_runs_its_passes_on_a_local_cluster_and_gets_the_local_answer(tmp_path):
    """`linreg run DATA --dask` with Prefect's temporary server: the exact fit's, the comparison's
    and the plot's passes run as part tasks on a local cluster of worker processes (which find the
    temporary server through the settings sent with each task), and the coefficients equal this
    process's one-part fit to float64 rounding."""
    from tasks.exact.fit import fit_exact
    from tests.prefect_server import BIN, cli_env

    rng = np.random.default_rng(3)
    rows = 5 * 65536 + 123  # the stored file's row groups hold 65536 rows: 6 of them, 4 parts
    X = rng.normal(size=(rows, 3)) * [1.0, 10.0, 0.1] + [5.0, -3.0, 100.0]
    y = 2.0 + X @ [1.0, -0.5, 30.0] + rng.normal(size=rows)
    path = tmp_path / "big.parquet"
    pq.write_table(pa.table({"y": y, "x1": X[:, 0], "x2": X[:, 1], "x3": X[:, 2]}), path)
    result = subprocess.run(
        [str(BIN / "linreg"), "run", str(path), "--dask", "--epochs", "20",
         "--artifacts-dir", str(tmp_path / "artifacts"), "--data-dir", str(tmp_path / "data")],
        cwd=REPO, env=cli_env(tmp_path / "home"), capture_output=True, text=True,
        stdin=subprocess.DEVNULL, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    for kernel in ("part_sums", "measure_part"):  # the refinement's part tasks, the comparison and plot's
        assert f"Task run '{kernel}-3'" in result.stderr, kernel
    version = Path(result.stdout.strip().splitlines()[-1])
    exact = json.loads((version / "coefficients.json").read_text())["exact"]
    local = fit_exact(Design.from_arrays(X, y, ("x1", "x2", "x3")))
    np.testing.assert_allclose([exact["intercept"], *exact["coefficients"]], local.params, rtol=4e-16, atol=0)


def test_linreg_run_dask_address_ingests_on_the_schedulers_worker(tmp_path):
    """`linreg run DATA --dask SCHEDULER_FILE` with `dask scheduler` + one `dask worker` process: the
    ingest's parts (one thread: 2 of them) run on that worker, the stored table is their folder of
    parts, and its content hash is the one-piece pass's."""
    from tasks.config import ModelSpec
    from tasks.ingest.prepare import prepare_data
    from tests.prefect_server import BIN, cli_env

    rng = np.random.default_rng(5)
    rows = 3 * 65536 + 5
    X = rng.normal(size=(rows, 2))
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"y": 1.0 + X @ [2.0, -1.0] + rng.normal(size=rows), "x1": X[:, 0], "x2": X[:, 1]}),
                   path, row_group_size=50_000)
    scheduler_file = tmp_path / "scheduler.json"
    with _dask_processes(tmp_path) as start:
        process = start("scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                        "--scheduler-file", str(scheduler_file))
        address = _address_in(scheduler_file, process)
        start("worker", address, "--no-nanny", "--nthreads", "1", "--no-dashboard", "--host", "127.0.0.1",
              "--death-timeout", str(DEADLINE), "--local-directory", str(tmp_path / "w"))
        result = subprocess.run(
            [str(BIN / "linreg"), "run", str(path), "--dask", str(scheduler_file), "--epochs", "5",
             "--artifacts-dir", str(tmp_path / "artifacts"), "--data-dir", str(tmp_path / "data")],
            cwd=REPO, env=cli_env(tmp_path / "home"), capture_output=True, text=True,
            stdin=subprocess.DEVNULL, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "read, checked and stored in 2 parts on the Dask cluster's workers" in result.stderr
    sha = prepare_data(ModelSpec(), path, tmp_path / "local").sha256
    stored = tmp_path / "data" / "validated" / f"{sha}.parquet"
    assert sorted(p.name for p in stored.iterdir()) == ["_linreg.json", "part-00000.parquet", "part-00001.parquet"]
    version = Path(result.stdout.strip().splitlines()[-1])
    assert json.loads((version / "manifest.json").read_text())["data"]["parquet"] == str(stored)
