"""`bench/run.py --smoke` runs and reports, and its instruments measure what they say. A benchmark
is not a test: nothing here checks a speed."""

from __future__ import annotations

import math
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from bench.common import bench_env, dataset, measure, python

ROOT = Path(__file__).resolve().parents[1]
APPROACHES = {"pyarrow read_table", "linreg-flow exact", "numpy lstsq", "pandas + scikit-learn", "pandas + statsmodels"}


def sections(text: str) -> dict[str, str]:
    """'## Title' -> the text under it."""
    parts = text.split("\n## ")[1:]
    return {p.split("\n", 1)[0]: p.split("\n", 1)[1] for p in parts}


def table(text: str) -> list[dict[str, str]]:
    """The rows of the first markdown table in text, as dicts keyed by the header."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    return [dict(zip(cells[0], row)) for row in cells[2:]]


def test_smoke_bench_writes_every_table_with_finite_ratios(tmp_path):
    """The smoke run exits 0 and RESULTS.md has the machine, the goals and sections (a) to (h); the
    exact-fit table has every approach at 1e3 rows x 1 and 4 features with finite positive ratios and
    coefficients that agree with linreg-flow's, and the NIST table has LREs in [0, 15]."""
    out = tmp_path / "RESULTS.md"
    argv = [sys.executable, "bench/run.py", "--smoke", "--out", str(out), "--cache", str(tmp_path / "cache")]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    found = sections(out.read_text())
    titles = list(found)
    assert titles[:3] == ["Machine", "Goals of issue 8", "Goals of issue 18"]
    assert [t[:3] for t in titles[3:]] == ["(a)", "(b)", "(c)", "(d)", "(e)", "(f)", "(g)", "(h)"]
    assert "CPU:" in found["Machine"] and "torch" in found["Machine"]

    training = found[titles[3]]
    assert "failed" not in training
    assert any(ch.isdigit() for ch in training)

    exact = table(found[titles[4]])
    assert {(r["rows"], r["features"], r["approach"]) for r in exact} == {
        (rows, p, a) for rows in ["1e3"] for p in ["1", "4"] for a in APPROACHES}
    for r in exact:
        assert math.isfinite(float(r["work ÷ linreg-flow's"])) and float(r["work ÷ linreg-flow's"]) > 0, r
        assert float(r["peak RSS MiB"]) > 0, r
        if r["approach"] != "pyarrow read_table":
            assert float(r["max rel. diff vs linreg-flow"]) < 1e-10, r

    nist = table(found[titles[6]])
    assert len(nist) == 11
    assert all(0 <= float(v) <= 15 for r in nist for k, v in r.items() if k != "dataset")

    paths = table(found[titles[7]])
    assert [r["data set"] for r in paths] == ["Longley"] and "failed" not in found[titles[7]]
    assert float(paths[0]["floor"]) > 0 and "(tol, " in paths[0]["default (runs default)"]

    ingest = table(found[titles[10]])  # the smoke size makes 4 parts: the parts' hash is the one piece's
    assert [(r["parts"], r["same sha256"]) for r in ingest] == [("4", "yes")], found[titles[10]]


def test_measure_reports_the_childs_own_output_and_peak_rss(tmp_path):
    """A child that writes 200 MiB peaks above 200 MiB, and below what the parent plus it would hold."""
    done = measure(python("-c", "b = b'x' * (200 * 2**20); print(len(b))"), bench_env(tmp_path), 120)
    assert (done.returncode, done.stdout.strip()) == (0, str(200 * 2**20))
    assert 200 * 2**20 <= done.peak_rss < 320 * 2**20


def test_measure_kills_a_child_past_its_time_limit(tmp_path):
    """The time limit SIGKILLs the child's session and result() says so."""
    done = measure(python("-c", "import time; time.sleep(600)"), bench_env(tmp_path), 1)
    assert done.returncode == -signal.SIGKILL
    with pytest.raises(RuntimeError, match="killed after"):
        done.result()


def test_dataset_follows_its_recipe_in_row_groups_and_is_written_once(tmp_path):
    """y = 3 + X b + N(0, 1) with b = linspace(-2, 2, p), in row groups of 65536 rows; a second call reuses the file."""
    path = dataset(70_000, 3, tmp_path)
    meta = pq.read_metadata(path)
    assert (meta.num_rows, meta.num_row_groups, meta.schema.names) == (70_000, 2, ["y", "x1", "x2", "x3"])
    frame = pq.read_table(path).to_pandas()
    noise = frame["y"] - 3 - frame[["x1", "x2", "x3"]].to_numpy() @ np.linspace(-2, 2, 3)
    assert abs(noise.mean()) < 0.05 and abs(noise.std() - 1) < 0.05
    stamp = path.stat().st_mtime_ns
    assert dataset(70_000, 3, tmp_path) == path and path.stat().st_mtime_ns == stamp
