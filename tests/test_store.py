"""The store step: validated data is written once, as Parquet named by the SHA-256 of its content."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import tasks.store
from tasks.config import ModelSpec
from tasks.load import load_table
from tasks.store import content_sha256, write_parquet_once
from tasks.tempfiles import temp_name
from tasks.validate import validate_table
from tests.helpers import TUTORIAL_X, TUTORIAL_Y


def _frame(shift: float = 0.0) -> pd.DataFrame:
    return pd.DataFrame({"y": TUTORIAL_Y + shift, "x": TUTORIAL_X})


def test_the_same_data_gets_the_same_name_and_is_not_rewritten(tmp_path):
    """A second write of equal data returns the same file and leaves it untouched (mtime unchanged)."""
    first = write_parquet_once(_frame(), tmp_path, "first.csv")
    path = Path(first.path)
    stamp = path.stat().st_mtime_ns
    # Back-date the file so a rewrite could not keep the same mtime by coincidence.
    os.utime(path, ns=(stamp - 10**9, stamp - 10**9))
    second = write_parquet_once(_frame(), tmp_path, "second.csv")
    assert second.path == first.path
    assert second.sha256 == first.sha256
    assert path.stat().st_mtime_ns == stamp - 10**9
    assert path.name == f"{first.sha256}.parquet"
    assert path.parent == (tmp_path / "validated").resolve()
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp files left


def test_different_data_gets_a_different_name(tmp_path):
    """Changing one value changes the hash and the file name."""
    a = write_parquet_once(_frame(), tmp_path, "a.csv")
    changed = _frame()
    changed.loc[3, "y"] = 25.400000000000002  # one ulp away
    b = write_parquet_once(changed, tmp_path, "b.csv")
    assert a.sha256 != b.sha256
    assert a.path != b.path
    assert Path(a.path).exists() and Path(b.path).exists()


def test_column_names_are_part_of_the_content(tmp_path):
    """The same numbers under other column names are other data."""
    renamed = _frame().rename(columns={"x": "t"})
    assert content_sha256(renamed) != content_sha256(_frame())


def test_the_parquet_round_trips_the_values_exactly(tmp_path):
    """Reading the stored file gives back every float64 bit for bit, columns in order."""
    frame = pd.DataFrame({"y": [0.1, 1 / 3, -2.5e-300, 1e308], "x": [1.0, 2.0, 3.0, 4.0]})
    stored = write_parquet_once(frame, tmp_path, "src.csv")
    assert stored.rows == 4
    pd.testing.assert_frame_equal(pd.read_parquet(stored.path), frame, check_exact=True)


def test_the_parquet_carries_provenance_metadata(tmp_path):
    """The file's schema metadata records source, sha256, rows and columns."""
    stored = write_parquet_once(_frame(), tmp_path, "/some/where/seed.csv")
    meta = pq.read_schema(stored.path).metadata
    provenance = json.loads(meta[b"linreg_flow.provenance"])
    assert provenance["source"] == "/some/where/seed.csv"
    assert provenance["sha256"] == stored.sha256
    assert provenance["rows"] == len(TUTORIAL_X)
    assert provenance["columns"] == ["y", "x"]
    assert provenance["written_at"]


@pytest.mark.parametrize("values", ["tutorial", "random-17-digits"])
def test_the_hash_does_not_depend_on_the_input_format(tmp_path, values):
    """The same numbers read from CSV or from Parquet validate to the same content_sha256."""
    if values == "tutorial":
        x, y = TUTORIAL_X, TUTORIAL_Y
    else:
        rng = np.random.default_rng(1)
        x = rng.normal(size=200) * 10.0 ** rng.integers(-12, 12, size=200)
        y = rng.normal(size=200)
    csv = tmp_path / "d.csv"
    csv.write_text("x,y\n" + "".join(f"{float(a)!r},{float(b)!r}\n" for a, b in zip(x, y)))
    parquet = tmp_path / "d.parquet"
    pq.write_table(pa.table({"x": x, "y": y}), parquet)
    from_csv = validate_table(load_table(csv), ModelSpec()).frame
    from_parquet = validate_table(load_table(parquet), ModelSpec()).frame
    assert content_sha256(from_csv) == content_sha256(from_parquet)
    a = write_parquet_once(from_csv, tmp_path / "data", str(csv))
    b = write_parquet_once(from_parquet, tmp_path / "data", str(parquet))
    assert a.path == b.path


def test_concurrent_writers_of_the_same_content_all_succeed_and_one_file_is_kept(tmp_path):
    """Eight threads store the same table at once: all return the same path; one whole file, no temp left."""
    barrier = threading.Barrier(8)
    results: list[str] = []

    def writer(k: int) -> None:
        barrier.wait(timeout=60)
        results.append(write_parquet_once(_frame(), tmp_path, f"writer-{k}.csv").path)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(results) == 8 and len(set(results)) == 1
    assert [p.name for p in (tmp_path / "validated").iterdir()] == [Path(results[0]).name]
    pd.testing.assert_frame_equal(pd.read_parquet(results[0]), _frame(), check_exact=True)


def test_a_writer_that_loses_the_race_keeps_the_winners_file(tmp_path, monkeypatch):
    """Another writer finishes between our temp file and our link: its file stays as it is, ours goes."""
    target = tmp_path / "validated" / f"{content_sha256(_frame())}.parquet"

    def other_writer_finishes(point: str) -> None:
        assert point == "stored-temp"
        pq.write_table(pa.Table.from_pandas(_frame(), preserve_index=False), target)

    monkeypatch.setattr(tasks.store, "crash_point", other_writer_finishes)
    stored = write_parquet_once(_frame(), tmp_path, "late.csv")
    assert Path(stored.path) == target.resolve()
    assert b"linreg_flow.provenance" not in (pq.read_schema(target).metadata or {}), "the winner's file, not ours"
    assert [p.name for p in target.parent.iterdir()] == [target.name]


def test_a_temp_file_left_by_a_dead_writer_is_removed_and_a_live_ones_kept(tmp_path):
    """A killed writer's half-written temp file goes with the next write; a live writer's stays."""
    folder = tmp_path / "validated"
    folder.mkdir()
    child = subprocess.run([sys.executable, "-c", "from tasks.tempfiles import temp_name; "
                            "print(temp_name('.tmp-', '.parquet'))"],
                           capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[1])
    dead, live = child.stdout.strip(), temp_name(".tmp-", ".parquet")
    for name in (dead, live):
        (folder / name).write_bytes(b"PAR1 half written")
    write_parquet_once(_frame(), tmp_path, "next.csv")
    assert sorted(p.name for p in folder.iterdir()) == sorted([live, f"{content_sha256(_frame())}.parquet"])
