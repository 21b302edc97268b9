"""prepare_data: load -> validate -> store in one streamed pass; results do not depend on blocking."""

from __future__ import annotations

import json
import os
import re
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.config import ModelSpec
from tasks.errors import UserInputError
from tasks.exact.fit import fit_exact
from tasks.ingest.prepare import STAGES, Prepared, prepare_data, prepare_data_task
from tasks.kernels import compiled
from tasks.kernels.design import Design
from tasks.kernels.tsqr import design_geometry


def _random_table(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """y = 1 + 2 x1 - 3 x2 + noise, columns of different scales."""
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n) * 100.0, rng.uniform(-1e-3, 1e-3, size=n)
    return {"x1": x1, "x2": x2, "y": 1.0 + 2.0 * x1 - 3.0 * x2 + rng.normal(size=n)}


def _write_csv(path: Path, table: dict[str, np.ndarray]) -> Path:
    names = list(table)
    rows = np.column_stack([table[c] for c in names])
    path.write_text(",".join(names) + "\n" + "".join(",".join(map(repr, map(float, r))) + "\n" for r in rows))
    return path


def _snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under root with its kind, size and mtime (folders' mtimes move when anything is
    created in them, even if it is removed again)."""
    return {str(p.relative_to(root)): (p.is_dir(), p.stat().st_size if p.is_file() else 0, p.stat().st_mtime_ns)
            for p in [root, *root.rglob("*")]}


def test_a_bad_value_deep_inside_a_csv_larger_than_one_block_names_its_line(tmp_path):
    """10,000 rows read 1,000 at a time; 'oops' on data row 7,777 is named with row 7777 and line 7778."""
    table = _random_table(10_000)
    path = _write_csv(tmp_path / "big.csv", table)
    lines = path.read_text().splitlines(keepends=True)
    lines[7777] = lines[7777].replace(lines[7777].split(",")[1], "oops", 1)  # x2 of data row 7777
    path.write_text("".join(lines))
    with pytest.raises(UserInputError, match=r"big\.csv: column 'x2', row 7777 \(line 7778\): value 'oops' is not a number"):
        prepare_data(ModelSpec(), path, tmp_path / "data", block_rows=1000)
    assert not (tmp_path / "data").exists()


def test_parquet_row_groups_of_3_rows_give_the_result_of_one_block(tmp_path):
    """Row groups of 3 read in blocks of 3: the same hash, stats and (to rounding) geometry as one block,
    and the geometry is the in-memory design's."""
    table = _random_table(100)
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table(table), path, row_group_size=3)
    small = prepare_data(ModelSpec(), path, tmp_path / "a", block_rows=3)
    whole = prepare_data(ModelSpec(), path, tmp_path / "b")
    assert small.sha256 == whole.sha256 and small.rows == whole.rows == 100
    meta = pq.read_metadata(small.path)
    assert {meta.row_group(g).num_rows for g in range(meta.num_row_groups - 1)} == {3}
    np.testing.assert_allclose(small.stats.mean, whole.stats.mean, rtol=1e-14)
    np.testing.assert_allclose(small.stats.m2, whole.stats.m2, rtol=1e-13)
    memory = Design.from_arrays(np.column_stack([table["x1"], table["x2"]]), table["y"], ("x1", "x2"))
    expected = design_geometry(memory).initial_solution()
    for prepared in (small, whole):
        np.testing.assert_allclose(prepared.geometry.initial_solution(), expected, rtol=1e-10)


def test_a_folder_is_read_file_after_file_and_a_bad_row_is_named_in_its_file(tmp_path):
    """Three files in name order make one table; a NaN in the second file is named with that file's row."""
    table = _random_table(30)
    folder = tmp_path / "parts"
    folder.mkdir()
    for k, name in enumerate(["c.parquet", "a.parquet", "b.parquet"]):  # sorted: a, b, c
        part = {c: v[[10 * "abc".index(name[0]) + i for i in range(10)]] for c, v in table.items()}
        pq.write_table(pa.table(part), folder / name, row_group_size=4)
    prepared = prepare_data(ModelSpec(), folder, tmp_path / "data", block_rows=7)
    stored = pq.read_table(prepared.path)
    np.testing.assert_array_equal(stored["y"].to_numpy(), table["y"])
    bad = {c: v[10:20].copy() for c, v in table.items()}
    bad["y"][5] = np.nan
    pq.write_table(pa.table(bad), folder / "b.parquet")
    with pytest.raises(UserInputError, match=re.escape(str((folder / "b.parquet").resolve())) +
                       r": column 'y', row 6: missing value"):
        prepare_data(ModelSpec(), folder, tmp_path / "other", block_rows=7)


def test_column_statistics_equal_numpys(tmp_path):
    """count, mean, m2, min, max of the stored columns (target first), merged over 7-row blocks."""
    table = _random_table(1000, seed=3)
    prepared = prepare_data(ModelSpec(), _write_csv(tmp_path / "d.csv", table), tmp_path / "data", block_rows=7)
    data = np.column_stack([table["y"], table["x1"], table["x2"]])
    assert prepared.columns == ("y", "x1", "x2") and prepared.stats.count == 1000
    np.testing.assert_allclose(prepared.stats.mean, data.mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(prepared.stats.m2, ((data - data.mean(axis=0)) ** 2).sum(axis=0), rtol=1e-12)
    np.testing.assert_array_equal(prepared.stats.min, data.min(axis=0))
    np.testing.assert_array_equal(prepared.stats.max, data.max(axis=0))


def test_the_design_reads_the_stored_file_and_its_geometry_gives_the_exact_fit(tmp_path):
    """design(spec) streams the stored rows; the fit with the pass's geometry equals numpy's lstsq."""
    table = _random_table(500, seed=5)
    prepared = prepare_data(ModelSpec(), _write_csv(tmp_path / "d.csv", table), tmp_path / "data", block_rows=64)
    design = prepared.design(ModelSpec())
    assert design.table.path == prepared.path
    np.testing.assert_array_equal(design.features, np.column_stack([table["x1"], table["x2"]]))
    X = np.column_stack([np.ones(500), table["x1"], table["x2"]])
    expected = np.linalg.lstsq(X, table["y"], rcond=None)[0]
    np.testing.assert_allclose(fit_exact(design, prepared.geometry).params, expected, rtol=1e-10)


def test_the_json_round_trip_is_exact(tmp_path):
    """to_json -> JSON text -> from_json gives back every float bit for bit and the basis' exact rationals."""
    table = _random_table(50, seed=7)
    path = _write_csv(tmp_path / "d.csv", {"x": table["x1"], "y": table["y"]})
    prepared = prepare_data(ModelSpec(degree=3), path, tmp_path / "data", block_rows=8)
    doc = json.loads(json.dumps(prepared.to_json()))
    back = Prepared.from_json(doc)
    assert back.to_json() == prepared.to_json()
    assert back.geometry.basis.exact == prepared.geometry.basis.exact
    for a, b in [(back.geometry.R, prepared.geometry.R), (back.geometry.qty, prepared.geometry.qty),
                 (back.stats.m2, prepared.stats.m2), (back.geometry.terms.mean, prepared.geometry.terms.mean)]:
        assert a.tobytes() == b.tobytes()
    assert (back.source, back.path, back.sha256, back.rows, back.columns) == \
        (prepared.source, prepared.path, prepared.sha256, prepared.rows, prepared.columns)


def test_timings_split_the_pass_into_load_validate_and_store(tmp_path):
    """Each stage gets its own seconds: each one positive (every stage does work), together no more
    than the call took, timed around it."""
    path = _write_csv(tmp_path / "d.csv", _random_table(20))
    start = time.perf_counter()
    prepared = prepare_data(ModelSpec(), path, tmp_path / "data")
    wall = time.perf_counter() - start
    assert set(prepared.timings) == set(STAGES) == {"load", "validate", "store"}
    assert all(seconds > 0 for seconds in prepared.timings.values())
    assert sum(prepared.timings.values()) <= wall


BAD_INPUTS = {
    "non-numeric deep inside": ("x,y\n" + "".join(f"{i},{2 * i + i % 3}\n" for i in range(50)) + "abc,1\n", {}),
    "too large": ("x,y\n1,2\n2,3.5\n1e300,4\n4,6\n", {}),
    "too few rows": ("x,y\n1,2\n2,3\n", {}),
    "constant": ("x,y\n4,1\n4,2\n4,3\n4,5\n", {}),
    "collinear": ("x1,x2,y\n1,2,1.5\n2,4,2.9\n3,6,4.2\n4,8,4.8\n5,10,6.1\n", {}),
    "degree": ("x,y\n1,1\n2,2.5\n1,1.1\n2,2.4\n1,0.9\n", {"degree": 3}),
    "missing target": ("x,y\n1,2\n2,3\n3,5\n", {"target": "z"}),
}


@pytest.mark.parametrize("temp", ["unnamed", "named"])
@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_a_rejected_input_leaves_an_existing_data_folder_untouched(tmp_path, monkeypatch, name, temp):
    """The stored file is written during the pass, yet a rejection changes nothing under data_dir:
    no file, no temp file, not even a folder's mtime; with an unnamed (O_TMPFILE) temp file, and
    with a named one where the filesystem has no unnamed files."""
    if temp == "named":
        monkeypatch.delattr(os, "O_TMPFILE", raising=False)
    data_dir = tmp_path / "data"
    (data_dir / "validated").mkdir(parents=True)
    (data_dir / "validated" / ("0" * 64 + ".parquet")).write_bytes(b"earlier parquet")
    text, spec = BAD_INPUTS[name]
    path = tmp_path / "bad.csv"
    path.write_text(text)
    before = _snapshot(data_dir)
    with pytest.raises(UserInputError, match=re.escape(str(path.resolve()))):
        prepare_data(ModelSpec(**spec), path, data_dir, block_rows=4)
    assert _snapshot(data_dir) == before


def test_a_rejected_input_creates_no_data_folder(tmp_path):
    """A missing data folder stays missing when the input is refused late (rank, after the whole pass)."""
    path = tmp_path / "bad.csv"
    path.write_text(BAD_INPUTS["collinear"][0])
    with pytest.raises(UserInputError, match="rank deficient"):
        prepare_data(ModelSpec(), path, tmp_path / "out" / "data", block_rows=2)
    assert [p.name for p in tmp_path.iterdir()] == ["bad.csv"]


def test_a_csv_undecodable_after_the_first_mib_is_refused_with_its_name(tmp_path):
    """UTF-8 is chosen from the first MiB; an invalid byte later is a clear error, not a crash."""
    path = tmp_path / "late.csv"
    path.write_bytes(b"x,y\n" + b"1.5,2.5\n3.5,4.25\n" * 70_000 + b"\xff,1\n")
    with pytest.raises(UserInputError, match=re.escape(str(path)) + ".*not a readable CSV file"):
        prepare_data(ModelSpec(), path, tmp_path / "data")


def test_the_pass_holds_one_block_not_the_table(tmp_path):
    """200,000 rows x 3 columns (4.8 MB as float64) read 2,000 rows at a time: numpy never holds more
    than a few blocks (Python-side allocations; pyarrow's buffers are bounded by the batch too)."""
    table = _random_table(200_000, seed=11)
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table(table), path, row_group_size=2_000)
    compiled.usable()  # numba's import (which a pass this long starts on a thread) is not the pass's memory
    tracemalloc.start()
    try:
        prepare_data(ModelSpec(), path, tmp_path / "data", block_rows=2_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 200_000 * 3 * 8 / 4, f"peak {peak} bytes"


def test_a_null_in_a_parquet_integer_column_is_a_missing_value(tmp_path):
    """Parquet nulls (here in an int64 column, read 2 rows at a time) are named like empty CSV cells."""
    path = tmp_path / "nulls.parquet"
    pq.write_table(pa.table({"x": pa.array([1, 2, 3, None, 5], pa.int64()), "y": [1.0, 2.5, 2.9, 4.2, 5.1]}), path)
    with pytest.raises(UserInputError, match=re.escape(str(path.resolve())) + r": column 'x', row 4: missing value"):
        prepare_data(ModelSpec(), path, tmp_path / "data", block_rows=2)


def test_the_prefect_task_runs_prepare_data(tmp_path):
    """prepare-data is the thin task over prepare_data (its logic runs without the engine via .fn)."""
    path = _write_csv(tmp_path / "d.csv", _random_table(20))
    prepared = prepare_data_task.fn(ModelSpec(), str(path), str(tmp_path / "data"))
    assert prepare_data_task.name == "prepare-data"
    assert prepared.sha256 == prepare_data(ModelSpec(), path, tmp_path / "data").sha256
