"""Crashes and overlapping runs: `kill -9` of a run's process group at any moment, damaged versions,
and several `linreg run` at once leave only complete versions and a correct drift chain.

Runs are the real CLI in its own process group, against one Prefect server for the module; the
crash points are tasks/faults.py's (LINREG_CRASH_AT), the random moments a seeded SIGKILL.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from fnmatch import fnmatch
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tasks.faults import CRASH_AT
from tasks.publish.schema import Coefficients, Manifest
from tasks.publish.writer import (LATEST_TEMP, VERSION_TEMP, dumps, list_versions, previous_version, read_version,
                                  version_name, write_version)
from tasks.tempfiles import remove_stale, temp_name
from tests.prefect_server import BIN, cli_env
from tests.test_flow import assert_complete_version

SEED = Path(__file__).resolve().parents[1] / "data" / "seed.csv"
RUN_TIMEOUT = 600  # seconds: generous, a slow 2-core machine under load


@dataclass(frozen=True)
class Dirs:
    artifacts: Path
    data: Path


@pytest.fixture(scope="module")
def server(shared_server):
    return shared_server


def start_run(server, dirs: Dirs, crash_at: str | None = None, log: Path | None = None) -> subprocess.Popen:
    """`linreg run data/seed.csv` in a process group of its own (so a SIGKILL of it spares the server)."""
    url, home = server
    env = cli_env(home, url)
    env.pop(CRASH_AT, None)
    if crash_at:
        env[CRASH_AT] = crash_at
    out = open(log or dirs.artifacts.parent / f"run-{time.monotonic_ns()}.log", "wb")
    with out:
        return subprocess.Popen(
            [str(BIN / "linreg"), "run", str(SEED), "--artifacts-dir", str(dirs.artifacts),
             "--data-dir", str(dirs.data)],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def finish(proc: subprocess.Popen) -> int:
    try:
        return proc.wait(timeout=RUN_TIMEOUT)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def run_ok(server, dirs: Dirs) -> Path:
    """A normal run: exit 0; returns the version folder its last stdout line names."""
    log = dirs.artifacts.parent / f"run-{time.monotonic_ns()}.log"
    code = finish(start_run(server, dirs, log=log))
    text = log.read_text()
    assert code == 0, text[-3000:]
    return Path(text.strip().splitlines()[-1])


def fresh_dirs(root: Path, baseline: Path | None = None) -> Dirs:
    """New artifacts and data folders; with a copy of baseline as the one existing version (and `latest`)."""
    root.mkdir(parents=True, exist_ok=True)
    dirs = Dirs(root / "artifacts", root / "data")
    dirs.artifacts.mkdir()
    if baseline is not None:
        shutil.copytree(baseline, dirs.artifacts / baseline.name)
        os.symlink(baseline.name, dirs.artifacts / "latest")
    return dirs


def visible_versions(artifacts: Path) -> list[str]:
    return sorted(p.name for p in artifacts.iterdir() if not p.name.startswith(".") and p.name != "latest")


def latest(artifacts: Path) -> str | None:
    link = artifacts / "latest"
    return os.readlink(link) if link.is_symlink() else None


def temp_entries(dirs: Dirs) -> list[str]:
    """Hidden temp entries of the artifacts folder and of validated/."""
    names = [p.name for p in dirs.artifacts.iterdir() if p.name.startswith((".tmp-", ".latest-"))]
    validated = dirs.data / "validated"
    if validated.is_dir():
        names += [p.name for p in validated.iterdir() if p.name.startswith(".tmp-")]
    return names


def check_invariants(dirs: Dirs) -> None:
    """Every visible version complete with matching hashes; `latest` names one; every stored Parquet reads."""
    versions = visible_versions(dirs.artifacts)
    for name in versions:
        assert (dirs.artifacts / name).is_dir(), f"{name} is not a version folder"
        assert_complete_version(dirs.artifacts / name)
    link = dirs.artifacts / "latest"
    if link.exists() or link.is_symlink():
        assert latest(dirs.artifacts) in versions, f"latest -> {os.readlink(link)!r}, not a complete version"
    validated = dirs.data / "validated"
    for path in validated.glob("*.parquet") if validated.is_dir() else []:
        if not path.name.startswith("."):
            assert pq.read_table(path).num_rows == 10, path


@pytest.fixture(scope="module")
def baseline(server, tmp_path_factory) -> tuple[Path, float]:
    """One normal run: its version folder (copied as the existing version elsewhere) and its duration."""
    dirs = fresh_dirs(tmp_path_factory.mktemp("baseline"))
    started = time.monotonic()
    path = run_ok(server, dirs)
    return path, time.monotonic() - started


# --------------------------------------------------------------------------------------------
# kill -9 at each crash point, then at random moments.

# What each point leaves beside the existing version: new versions, whether `latest` moved, and the
# hidden temp entries (in the artifacts folder or validated/) that the next run must remove.
CRASH_POINTS = {
    "loaded": (0, False, []),
    "stored-temp": (0, False, [".tmp-*.parquet"]),
    "version-temp": (0, False, [".tmp-*"]),
    "renamed": (1, False, []),
    "published": (1, True, []),
}


@dataclass
class Killed:
    """One crash point's scenario: the kill, what it left, then the next run and what that left."""

    code: int
    before: list[str]
    after: list[str]
    latest: str | None
    left: list[str]
    checked: Exception | None = None
    next_path: Path | None = None
    next_versions: list[str] | None = None
    next_latest: str | None = None
    next_left: list[str] | None = None


def kill_then_rerun(server, baseline: Path, root: Path, point: str) -> Killed:
    dirs = fresh_dirs(root, baseline)
    before = visible_versions(dirs.artifacts)
    code = finish(start_run(server, dirs, crash_at=point))
    killed = Killed(code, before, visible_versions(dirs.artifacts), latest(dirs.artifacts), temp_entries(dirs))
    try:
        check_invariants(dirs)
        killed.next_path = run_ok(server, dirs)
        check_invariants(dirs)
    except AssertionError as exc:  # reported by the test of this point
        killed.checked = exc
        return killed
    killed.next_versions, killed.next_latest = visible_versions(dirs.artifacts), latest(dirs.artifacts)
    killed.next_left = temp_entries(dirs)
    return killed


@pytest.fixture(scope="module")
def killed(server, baseline, tmp_path_factory) -> dict[str, Killed]:
    """The five scenarios side by side (each its own folders; processes, so both cores work)."""
    root = tmp_path_factory.mktemp("killed")
    with ThreadPoolExecutor(len(CRASH_POINTS)) as pool:
        futures = {p: pool.submit(kill_then_rerun, server, baseline[0], root / p, p) for p in CRASH_POINTS}
        return {p: f.result() for p, f in futures.items()}


@pytest.mark.parametrize("point", list(CRASH_POINTS))
def test_a_kill_at_each_crash_point_leaves_only_complete_versions_and_the_next_run_works(killed, point):
    """SIGKILL of the group at the point: invariants hold; the next run exits 0 and removes the leftovers."""
    run = killed[point]
    assert run.code == -signal.SIGKILL
    if run.checked is not None:
        raise run.checked
    new_versions, latest_moved, leftovers = CRASH_POINTS[point]
    assert len(run.after) == len(run.before) + new_versions
    assert run.latest == (run.after[-1] if latest_moved else run.before[-1])
    assert len(run.left) == len(leftovers) and all(map(fnmatch, run.left, leftovers)), (run.left, leftovers)

    assert run.next_versions == run.after + [run.next_path.name]
    assert run.next_latest == run.next_path.name
    assert run.next_left == []
    assert json.loads((run.next_path / "coefficients.json").read_text())["drift"]["since"] == run.after[-1]


def test_kills_at_random_moments_leave_only_complete_versions(server, baseline, tmp_path):
    """Four runs killed after seeded delays spread over a normal run's duration; then a run works."""
    dirs = fresh_dirs(tmp_path, baseline[0])
    duration = baseline[1]
    rng = random.Random(7)
    for k in range(4):
        delay = rng.uniform(k / 4, (k + 1) / 4) * duration  # one delay in each quarter of a run
        proc = start_run(server, dirs)
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        assert finish(proc) in (0, -signal.SIGKILL)
        check_invariants(dirs)
    path = run_ok(server, dirs)
    check_invariants(dirs)
    assert latest(dirs.artifacts) == path.name == visible_versions(dirs.artifacts)[-1]
    assert temp_entries(dirs) == []


# --------------------------------------------------------------------------------------------
# Temp entries of a live run survive a cleanup; those of a dead run do not.


def test_cleanup_removes_dead_runs_temp_entries_and_never_a_live_runs(tmp_path):
    """A live process's entry survives; once it has exited, the next cleanup removes it."""
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; from tasks.tempfiles import temp_name; "
         "print(temp_name('.tmp-'), flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1])
    try:
        owned = child.stdout.readline().strip()
        (tmp_path / owned).mkdir()
        assert remove_stale(tmp_path, (VERSION_TEMP,)) == []
        assert (tmp_path / owned).is_dir()
    finally:
        child.stdin.close()
        child.wait(timeout=60)
    assert remove_stale(tmp_path, (VERSION_TEMP,)) == [owned]
    assert not (tmp_path / owned).exists()


def test_cleanup_tells_pid_reuse_other_hosts_and_foreign_names_apart(tmp_path):
    """Our pid with another start time is stale (pid reuse); other hosts' and unparsable names stay."""
    mine = temp_name(".tmp-")
    host, pid, start, rand = mine.removeprefix(".tmp-").rsplit("-", 3)
    reused = f".tmp-{host}-{pid}-{int(start) + 1}-{rand}"
    foreign = [f".tmp-not-{host}-{pid}-{int(start) + 1}-{rand}", ".tmp-k2h4x9", ".lock"]
    for name in [mine, reused, *foreign]:
        (tmp_path / name).mkdir()
    os.symlink("nowhere", tmp_path / f".latest-{host}-{pid}-{int(start) + 1}-{rand}")
    removed = remove_stale(tmp_path, (VERSION_TEMP, LATEST_TEMP))
    assert sorted(removed) == sorted([reused, f".latest-{host}-{pid}-{int(start) + 1}-{rand}"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([mine, *foreign])


# --------------------------------------------------------------------------------------------
# Damaged versions.


def table_rows(text: str) -> dict[str, list[str]]:
    """The rows of a rich table, by first cell; a cell folded over several lines is joined by spaces."""
    rows: dict[str, list[str]] = {}
    cells: list[str] = []
    for line in text.splitlines():
        parts = [part.strip() for part in line.split("│")[1:-1]]
        if not parts:
            continue
        if parts[0]:
            cells = rows.setdefault(parts[0], parts)
        else:
            cells[:] = [f"{a} {b}".strip() for a, b in zip(cells, parts)]
    return rows

MODEL = {"target": "y", "terms": ["x"], "intercept": True}


def _model(exact: dict) -> Coefficients:
    return Coefficients.from_json(MODEL | {"exact": exact, "sgd": {}})


def _write(artifacts: Path, b0: float) -> Path:
    """A version of y ~ 1 + x with exact parameters (b0, 2.0), by the real writer."""
    files = {"comparison.json": dumps({"max_rel_diff": 0.0})}
    return write_version(artifacts, "ab" * 32, files, _model({"intercept": b0, "coefficients": [2.0]}),
                         Manifest.from_json({"data": {}}))[0]


def test_a_version_edited_by_hand_is_damaged_and_skipped_for_drift(tmp_path):
    """Valid JSON whose sha256 differs from the manifest's: damaged, so drift measures from the one before."""
    first, second = _write(tmp_path, 1.0), _write(tmp_path, 2.0)
    coefficients = json.loads((second / "coefficients.json").read_text())
    (second / "coefficients.json").write_text(json.dumps(coefficients | {"target": "y"}))  # other bytes
    assert "coefficients.json does not match its sha256" in read_version(second).damage
    assert read_version(first).damage is None
    assert previous_version(list_versions(tmp_path), _model({}))[0] == first.name
    third = json.loads((_write(tmp_path, 4.0) / "coefficients.json").read_text())
    assert third["drift"]["since"] == first.name
    assert third["drift"]["changes"] == {"intercept": 3.0, "x": 0.0}


def test_a_truncated_version_is_listed_as_damaged_and_skipped_by_the_next_run(server, baseline, tmp_path):
    """`linreg versions` exits 0 and marks it; a new run's drift is since the newest sound version."""
    dirs = fresh_dirs(tmp_path, baseline[0])
    sound = visible_versions(dirs.artifacts)[-1]
    docs = read_version(dirs.artifacts / sound)
    damaged = write_version(dirs.artifacts, docs.manifest.data.sha256,
                            {"comparison.json": dumps(docs.comparison.to_json())}, docs.coefficients, docs.manifest)[0]
    text = (damaged / "coefficients.json").read_bytes()
    (damaged / "coefficients.json").write_bytes(text[: len(text) // 2])

    url, home = server
    listing = subprocess.run([str(BIN / "linreg"), "versions", "--artifacts-dir", str(dirs.artifacts)],
                             env=cli_env(home, url), capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert listing.returncode == 0, listing.stderr
    rows = table_rows(listing.stdout)
    assert rows[damaged.name][2].startswith("damaged: coefficients.json is not valid JSON"), rows
    assert rows[sound][2] == "y ~ 1 + x"

    path = run_ok(server, dirs)
    assert json.loads((path / "coefficients.json").read_text())["drift"]["since"] == sound
    assert visible_versions(dirs.artifacts) == [sound, damaged.name, path.name]


# --------------------------------------------------------------------------------------------
# Overlapping runs.


def test_version_names_sort_in_publish_order_even_if_the_clock_is_behind(tmp_path):
    """A version named in the future (a clock set back since): the next name still sorts after it."""
    artifacts = tmp_path / "artifacts"
    ahead = artifacts / version_name("ff" * 32, datetime(2099, 1, 1, tzinfo=timezone.utc))
    shutil.copytree(_write(tmp_path / "elsewhere", 1.0), ahead)
    path = _write(artifacts, 2.0)
    assert [p.name for p in list_versions(artifacts)] == [ahead.name, path.name]
    assert os.readlink(artifacts / "latest") == path.name


def test_four_runs_at_once_get_four_complete_versions_and_a_correct_drift_chain(server, baseline, tmp_path):
    """4 `linreg run` at once, same folders and server: all exit 0, each version's drift is since the one before."""
    dirs = fresh_dirs(tmp_path, baseline[0])
    logs = [tmp_path / f"run-{k}.log" for k in range(4)]
    # Overlap for sure, whatever the machine's speed: while the test holds the lock that names versions,
    # every run writes its files into a temp folder and waits; then they are named one by one.
    with open(dirs.artifacts / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        procs = [start_run(server, dirs, log=log) for log in logs]
        try:
            deadline = time.monotonic() + RUN_TIMEOUT
            while len(list(dirs.artifacts.glob(".tmp-*"))) < 4:
                assert all(p.poll() is None for p in procs), "a run ended before it could be named"
                assert time.monotonic() < deadline, "the runs did not all reach the naming step"
                time.sleep(0.2)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
            codes = [finish(proc) for proc in procs]
    assert codes == [0, 0, 0, 0], [log.read_text()[-2000:] for log in logs]
    made = sorted(log.read_text().strip().splitlines()[-1] for log in logs)
    names = visible_versions(dirs.artifacts)
    assert len(set(made)) == 4 and names == [baseline[0].name] + [Path(p).name for p in made]
    check_invariants(dirs)
    for before, name in zip(names, names[1:]):
        assert json.loads((dirs.artifacts / name / "coefficients.json").read_text())["drift"]["since"] == before
    assert latest(dirs.artifacts) == names[-1]
    stored = [p for p in (dirs.data / "validated").iterdir()]
    assert len(stored) == 1 and stored[0].suffix == ".parquet", stored
    assert pq.read_table(stored[0]).num_rows == 10
    assert temp_entries(dirs) == []
