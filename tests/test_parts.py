"""The ingest pass part by part (--dask: on the workers): the one-machine pass's hash, rows, statistics,
geometry and messages; the stored table as a folder of parts, published whole or not at all.

The parts run here through local_map, one after another: what a part computes and how the parts
merge does not depend on where they run (tests/test_storage.py runs them on a LocalCluster's
workers against the S3 server).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.config import ModelSpec
from tasks.errors import UserInputError
from tasks.ingest.load import open_input
from tasks.ingest.parts import part_bounds
from tasks.ingest.prepare import prepare_data
from tasks.ingest.store import HASH_CHUNK_ROWS
from tasks.kernels.passes import Passes, local_map
from tasks.kernels.table import ColumnStats, ParquetTable

CHUNK = HASH_CHUNK_ROWS
REPO = Path(__file__).resolve().parents[1]


def _frame(rows: int, seed: int = 2) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(3.0, 2.0, rows), rng.integers(0, 7, rows).astype(float)
    w = rng.uniform(0.5, 2.0, rows)
    return pd.DataFrame({"y": 1.0 - 2.0 * x1 + 0.5 * x2 + rng.normal(size=rows), "x1": x1, "x2": x2, "w": w})


def _folder(frame: pd.DataFrame, folder: Path, cuts: tuple[int, ...], row_group: int = 20_000) -> Path:
    """The frame as Parquet files cut at `cuts`, in row groups of row_group rows (none on a chunk boundary)."""
    folder.mkdir(parents=True, exist_ok=True)
    bounds = [0, *cuts, len(frame)]
    for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        pq.write_table(pa.Table.from_pandas(frame.iloc[a:b], preserve_index=False), folder / f"f{i}.parquet",
                       row_group_size=row_group)
    return folder


def _oracle_sha256(columns: list[str], data: np.ndarray) -> str:
    """The documented content hash, computed in one go (tests/test_store.py has the same oracle)."""
    rows = np.ascontiguousarray(data, dtype="<f8")
    digests = b"".join(hashlib.sha256(rows[a:a + CHUNK].tobytes()).digest() for a in range(0, len(rows), CHUNK))
    return hashlib.sha256(json.dumps(columns).encode() + b"\n" + digests).hexdigest()


def test_part_bounds_cut_on_chunk_boundaries_and_cover_every_row():
    for rows in (1, CHUNK - 1, CHUNK, CHUNK + 1, 5 * CHUNK + 3, 40 * CHUNK):
        for parts in (1, 2, 3, 4, 7, 100):
            bounds = part_bounds(rows, parts)
            assert bounds[0][0] == 0 and bounds[-1][1] == rows
            assert all(b == c for (_, b), (c, _) in zip(bounds[:-1], bounds[1:]))  # consecutive, no gap
            assert all(a % CHUNK == 0 and b > a for a, b in bounds)
            assert len(bounds) == min(parts, -(-rows // CHUNK))


def test_a_part_reads_exactly_its_rows_across_files_and_row_groups(tmp_path):
    frame = _frame(3 * CHUNK + 500)
    source = open_input(_folder(frame, tmp_path / "in", (70_000, 70_003)))
    for a, b in [(0, CHUNK), (CHUNK, 3 * CHUNK), (3 * CHUNK, len(frame)), (69_999, 70_004)]:
        blocks = list(source.blocks(("y", "x1"), 7_000, (a, b)))
        got = np.column_stack([np.concatenate([np.asarray(block.columns[j]) for block in blocks]) for j in (0, 1)])
        np.testing.assert_array_equal(got, frame[["y", "x1"]].to_numpy()[a:b])
        assert blocks[0].first_row == a and all(x.first_row + x.rows == y.first_row for x, y in zip(blocks, blocks[1:]))


@pytest.mark.parametrize("parts", [2, 3, 4, 9])
def test_parts_give_the_one_machine_hash_rows_and_fit_state(tmp_path, parts):
    """The content hash (and the documented one), the stored rows in order, the statistics and the
    geometry (to float64 rounding: the parts' sums merge in another order) of the one-machine pass."""
    frame = _frame(4 * CHUNK + 1234)
    data = _folder(frame, tmp_path / "in", (100_000, 100_001, 200_000))
    spec = ModelSpec(target="y", features=("x1", "x2"))
    one = prepare_data(spec, data, tmp_path / "one")
    many = prepare_data(spec, data, tmp_path / "many", passes=Passes(local_map, parts))
    assert many.parts == min(parts, 5) and one.parts == 1
    assert many.sha256 == one.sha256 == _oracle_sha256(["y", "x1", "x2"], frame[["y", "x1", "x2"]].to_numpy())
    stored = Path(many.path)
    assert stored == tmp_path / "many" / "validated" / f"{one.sha256}.parquet" and stored.is_dir()
    assert sorted(p.name for p in stored.iterdir()) == ["_linreg.json", *(f"part-{i:05d}.parquet"
                                                                         for i in range(many.parts))]
    assert json.loads((stored / "_linreg.json").read_text())["sha256"] == one.sha256
    assert pq.read_table(stored).equals(pq.read_table(one.path))  # one table to pyarrow (and pandas)
    assert os.listdir(tmp_path / "many" / "validated") == [stored.name]  # no temporary folder left
    assert many.stats.count == one.stats.count == len(frame)
    for key in ("mean", "m2", "min", "max"):
        np.testing.assert_allclose(getattr(many.stats, key), getattr(one.stats, key), rtol=1e-14, atol=0)
    _same_geometry(many, one)
    # The passes over the folder table read the stored rows in order, whole or split into parts.
    table = many.table()
    whole = np.concatenate(list(table.blocks()))
    np.testing.assert_array_equal(whole, frame[["y", "x1", "x2"]].to_numpy())
    pieces = table.split(3)
    assert sum(p.rows for p in pieces) == len(frame)
    np.testing.assert_array_equal(np.concatenate([b for p in pieces for b in p.blocks()]), whole)


def test_a_formula_with_levels_missing_drop_and_weights_in_parts(tmp_path):
    """C(x2)'s levels, the rows left out by --missing drop and the carried weights merge across parts."""
    frame = _frame(3 * CHUNK + 10)
    frame.loc[[5, CHUNK + 7, 2 * CHUNK + 9], "x1"] = np.nan
    data = _folder(frame, tmp_path / "in", (90_000,))
    spec = ModelSpec(formula="y ~ x1 + C(x2)", missing="drop", weights="w")
    one = prepare_data(spec, data, tmp_path / "one")
    many = prepare_data(spec, data, tmp_path / "many", passes=Passes(local_map, 3))
    assert many.parts == 3 and many.sha256 == one.sha256 and many.dropped == one.dropped == 3
    assert many.formula.levels == one.formula.levels and len(one.formula.levels["x2"]) == 7
    assert many.rows == one.rows == len(frame) - 3
    assert many.extra == one.extra == ("w",)
    np.testing.assert_allclose(many.weighting.stats.mean, one.weighting.stats.mean, rtol=1e-13)
    assert pq.read_table(many.path).equals(pq.read_table(one.path))


def _refusal(spec: ModelSpec, data: Path, data_dir: Path, parts: int) -> str:
    with pytest.raises(UserInputError) as caught:
        prepare_data(spec, data, data_dir, passes=Passes(local_map, parts))
    return str(caught.value)


@pytest.mark.parametrize("case", ["non-numeric", "infinite", "missing", "missing in two parts"])
def test_bad_values_in_any_part_get_the_one_machine_message_and_nothing_is_written(tmp_path, case):
    frame = _frame(3 * CHUNK + 10).astype({"x1": object})
    if case == "non-numeric":
        frame.loc[2 * CHUNK + 5, "x1"], frame.loc[2 * CHUNK + 9, "x2"] = "n/a", np.inf  # the first one is named
    elif case == "infinite":
        frame.loc[CHUNK + 3, "x2"] = np.inf
    elif case == "missing":
        frame.loc[CHUNK + 3, "x1"] = None
    else:
        frame.loc[[CHUNK + 3, 2 * CHUNK + 1, 2 * CHUNK + 2], "x1"] = None
        frame.loc[3 * CHUNK + 1, "y"] = np.nan
    data = _folder(frame.astype({"x1": str}) if case == "non-numeric" else frame.astype({"x1": float}),
                   tmp_path / "in", (90_000,))
    spec = ModelSpec(target="y", features=("x1", "x2"))
    with pytest.raises(UserInputError) as one:
        prepare_data(spec, data, tmp_path / "one")
    (tmp_path / "many").mkdir()
    before = (tmp_path / "many").stat().st_mtime_ns
    assert _refusal(spec, data, tmp_path / "many", 3) == str(one.value)
    assert os.listdir(tmp_path / "many") == [] and (tmp_path / "many").stat().st_mtime_ns == before


def test_too_many_levels_over_the_parts_together_is_refused(tmp_path):
    frame = _frame(2 * CHUNK + 10)
    frame["x2"] = np.where(np.arange(len(frame)) < CHUNK, 1.0, 2.0)  # one level per part, two in all
    data = _folder(frame, tmp_path / "in", ())
    message = _refusal(ModelSpec(formula="y ~ x1 + C(x2)", max_levels=1), data, tmp_path / "d", 2)
    assert "column 'x2' has more than 1 levels" in message
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("missing", ["error", "drop"])
def test_text_columns_in_parts_give_the_one_machine_hash_levels_and_rows(tmp_path, missing):
    """A formula's text columns (and a text cluster column) are checked, hashed per chunk and stored
    by the parts; with --missing drop leaving rows out of the first part, the hash comes from a second
    pass over the stored parts."""
    frame = _frame(3 * CHUNK + 10)
    frame["g"] = np.where(frame["x2"] > 3, "ab", "é")  # a two-byte character: lengths are bytes
    frame["site"] = [f"s{i % 5}" for i in range(len(frame))]
    if missing == "drop":
        frame.loc[[7, CHUNK + 1], "g"] = None
    data = _folder(frame, tmp_path / "in", (90_000,))
    spec = ModelSpec(formula="y ~ x1 + g", missing=missing)
    one = prepare_data(spec, data, tmp_path / "one", extra={"site": "--cov cluster:site"})
    many = prepare_data(spec, data, tmp_path / "many", passes=Passes(local_map, 3),
                        extra={"site": "--cov cluster:site"})
    assert many.parts == 3 and many.sha256 == one.sha256 and many.dropped == one.dropped
    assert many.formula.levels == one.formula.levels == {"g": ("ab", "é")}
    assert pq.read_table(many.path).equals(pq.read_table(one.path))
    _same_geometry(many, one)


def _same_geometry(a, b) -> None:
    """The same R factor up to the signs of its rows (a TSQR's are arbitrary): R^T R, to rounding."""
    ga, gb = a.geometry.R.T @ a.geometry.R, b.geometry.R.T @ b.geometry.R
    np.testing.assert_allclose(ga, gb, rtol=1e-12, atol=1e-12 * np.abs(gb).max())


def test_csv_is_read_in_one_piece(tmp_path):
    """A CSV file cannot be cut into parts without reading it: one part, one stored file."""
    _frame(2 * CHUNK + 10).to_csv(tmp_path / "t.csv", index=False)
    csv = prepare_data(ModelSpec(target="y", features=("x1",)), tmp_path / "t.csv", tmp_path / "c",
                       passes=Passes(local_map, 3))
    assert csv.parts == 1 and Path(csv.path).is_file()


def test_a_stored_table_already_there_wins_and_a_one_piece_run_finds_it(tmp_path):
    frame = _frame(2 * CHUNK + 10)
    data = _folder(frame, tmp_path / "in", ())
    spec = ModelSpec(target="y", features=("x1", "x2"))
    first = prepare_data(spec, data, tmp_path / "d", passes=Passes(local_map, 2))
    marker = Path(first.path) / "_linreg.json"
    written = marker.stat().st_mtime_ns
    again = prepare_data(spec, data, tmp_path / "d", passes=Passes(local_map, 3))
    one = prepare_data(spec, data, tmp_path / "d")
    assert again.path == one.path == first.path and marker.stat().st_mtime_ns == written
    assert os.listdir(tmp_path / "d" / "validated") == [Path(first.path).name]
    # The folder table as DATA: the same table, the same name.
    assert prepare_data(spec, Path(first.path), tmp_path / "d").sha256 == first.sha256


def test_a_run_killed_before_its_folder_is_named_leaves_nothing_visible_and_the_next_cleans_up(tmp_path):
    frame = _frame(2 * CHUNK + 10)
    data = _folder(frame, tmp_path / "in", ())
    script = ("import sys; from pathlib import Path; from tasks.config import ModelSpec; "
              "from tasks.ingest.prepare import prepare_data; from tasks.kernels.passes import Passes, local_map; "
              "prepare_data(ModelSpec(target='y', features=('x1',)), Path(sys.argv[1]), Path(sys.argv[2]), "
              "passes=Passes(local_map, 2))")
    killed = subprocess.run([sys.executable, "-c", script, str(data), str(tmp_path / "d")], cwd=REPO,
                            env={**os.environ, "LINREG_CRASH_AT": "stored-temp"}, start_new_session=True,
                            capture_output=True, timeout=300)
    assert killed.returncode == -9
    left = os.listdir(tmp_path / "d" / "validated")
    assert len(left) == 1 and left[0].startswith(".tmp-")  # hidden, not a stored table
    done = prepare_data(ModelSpec(target="y", features=("x1",)), data, tmp_path / "d", passes=Passes(local_map, 2))
    assert os.listdir(tmp_path / "d" / "validated") == [Path(done.path).name]


def test_a_parquet_table_of_part_files_splits_over_files(tmp_path):
    """ParquetTable over a folder: its row groups are numbered across the files, in order."""
    frame = _frame(1000)
    folder = tmp_path / "t.parquet"
    folder.mkdir()
    for i, (a, b) in enumerate([(0, 300), (300, 310), (310, 1000)]):
        pq.write_table(pa.Table.from_pandas(frame.iloc[a:b], preserve_index=False), folder / f"part-{i:05d}.parquet",
                       row_group_size=128)
    (folder / "_linreg.json").write_text("{}")
    table = ParquetTable(str(folder), ("y", "x1"), 1000, ColumnStats.empty(2), block_rows=100)
    want = frame[["y", "x1"]].to_numpy()
    for parts in (1, 2, 5, 11, 100):
        pieces = table.split(parts)
        assert [p.rows for p in pieces] and sum(p.rows for p in pieces) == 1000
        np.testing.assert_array_equal(np.concatenate([b for p in pieces for b in p.blocks()]), want)
        # A part travels (pickled) with the layout of its own files only, and splits again.
        travelled = [pickle.loads(pickle.dumps(p)) for p in pieces]
        assert all(len(p.layout) <= len(table.layout) for p in travelled)
        again = [q for p in travelled for q in p.split(3)]
        np.testing.assert_array_equal(np.concatenate([b for q in again for b in q.blocks()]), want)
    assert [len(p.layout) for p in table.split(3)] == [1, 2, 1]  # groups 0-2 (file 0) | 3-5 (files 1, 2) | 6-9 (file 2)
    np.testing.assert_array_equal(np.concatenate(list(table.column_blocks("x1"))), want[:, 1])
