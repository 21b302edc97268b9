"""The store step: validated data is written once, as Parquet named by the SHA-256 of its content."""

from __future__ import annotations

import hashlib
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

import tasks.ingest.prepare
import tasks.ingest.store
from tasks.config import ModelSpec
from tasks.errors import UserInputError
from tasks.ingest.prepare import prepare_data
from tasks.ingest.store import PROVENANCE, ContentHash, StagedParquet
from tasks.tempfiles import temp_name
from tests.helpers import TUTORIAL_X, TUTORIAL_Y


def _oracle_sha256(columns: list[str], data: np.ndarray, chunk_rows: int = 65536) -> str:
    """The documented hash, computed in one go: JSON names, newline, then the SHA-256 digest of each
    chunk of 65536 rows as row-major little-endian float64, in order."""
    rows = np.asarray(data, dtype="<f8")
    digests = b"".join(hashlib.sha256(rows[a:a + chunk_rows].tobytes(order="C")).digest()
                       for a in range(0, len(rows), chunk_rows))
    return hashlib.sha256(json.dumps(columns).encode() + b"\n" + digests).hexdigest()


def _tutorial_csv(folder: Path, name: str = "seed.csv", y: np.ndarray = TUTORIAL_Y) -> Path:
    path = folder / name
    path.write_text("x,y\n" + "".join(f"{float(a)!r},{float(b)!r}\n" for a, b in zip(TUTORIAL_X, y)))
    return path


def _store(data_dir: Path, frame: pd.DataFrame, source: str = "src.csv", block_rows: int = 4) -> str:
    """Drive the store step alone (no validation): hash, write, publish."""
    columns = tuple(frame.columns)
    digest = ContentHash(columns)
    with StagedParquet(data_dir, columns, block_rows) as staged:
        for a in range(0, len(frame), 3):  # 3-row input batches, 4-row row groups: the buffer at work
            part = frame.iloc[a:a + 3]
            digest.update(part.to_numpy(dtype=np.float64))
            staged.write([part[c].to_numpy(dtype=np.float64) for c in columns])
        staged.finish(source, digest.hexdigest(), len(frame))
        return staged.publish(digest.hexdigest())


def test_the_same_data_gets_the_same_name_and_is_not_rewritten(tmp_path):
    """A second run on equal data (another file) returns the same file and leaves it untouched."""
    first = prepare_data(ModelSpec(), _tutorial_csv(tmp_path, "first.csv"), tmp_path / "data")
    path = Path(first.path)
    stamp = path.stat().st_mtime_ns
    # Back-date the file so a rewrite could not keep the same mtime by coincidence.
    os.utime(path, ns=(stamp - 10**9, stamp - 10**9))
    second = prepare_data(ModelSpec(), _tutorial_csv(tmp_path, "second.csv"), tmp_path / "data")
    assert second.path == first.path
    assert second.sha256 == first.sha256
    assert path.stat().st_mtime_ns == stamp - 10**9
    assert path.name == f"{first.sha256}.parquet"
    assert path.parent == (tmp_path / "data" / "validated").resolve()
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp files left


def test_different_data_gets_a_different_name(tmp_path):
    """Changing one value by one ulp changes the hash and the file name."""
    a = prepare_data(ModelSpec(), _tutorial_csv(tmp_path, "a.csv"), tmp_path / "data")
    y = TUTORIAL_Y.copy()
    y[3] = np.nextafter(y[3], np.inf)
    b = prepare_data(ModelSpec(), _tutorial_csv(tmp_path, "b.csv", y), tmp_path / "data")
    assert a.sha256 != b.sha256
    assert a.path != b.path
    assert Path(a.path).exists() and Path(b.path).exists()


def test_column_names_are_part_of_the_content(tmp_path):
    """The same numbers under other column names are other data."""
    frame = pd.DataFrame({"y": TUTORIAL_Y, "x": TUTORIAL_X})
    assert _store(tmp_path, frame) != _store(tmp_path, frame.rename(columns={"x": "t"}))


@pytest.mark.parametrize("block_rows", [65536, 3, 1])
def test_the_hash_is_the_documented_one_for_any_block_size(tmp_path, block_rows):
    """sha256(JSON names + newline + each 65536-row chunk's digest), whatever the blocks the pass read."""
    prepared = prepare_data(ModelSpec(), _tutorial_csv(tmp_path), tmp_path / "data", block_rows)
    assert prepared.sha256 == _oracle_sha256(["y", "x"], np.column_stack([TUTORIAL_Y, TUTORIAL_X]))


@pytest.mark.parametrize("blocks", [[65536, 65536, 8], [30000, 70000, 31080], [131080], [1, 65535, 65536, 8]])
def test_the_chunked_hash_is_the_same_for_any_blocks_across_chunk_boundaries(blocks):
    """131080 rows (two full chunks and 8 rows) fed in blocks that straddle the chunk boundaries, as
    C-ordered and as column-major arrays: the oracle's hash; a one-row change changes it."""
    rng = np.random.default_rng(2)
    data = rng.normal(size=(sum(blocks), 3))
    for layout in (np.ascontiguousarray, np.asfortranarray):
        digest, at = ContentHash(("y", "a", "b")), 0
        for m in blocks:
            block = layout(data[at:at + m].copy())  # the caller's own buffer
            digest.update(block)
            block[:] = 0.0  # the caller reusing its buffer must not change the hash (it is taken on threads)
            at += m
        assert digest.hexdigest() == _oracle_sha256(["y", "a", "b"], data)
    other = data.copy()
    other[70000, 1] = np.nextafter(other[70000, 1], np.inf)
    digest = ContentHash(("y", "a", "b"))
    digest.update(other)
    assert digest.hexdigest() != _oracle_sha256(["y", "a", "b"], data)


def _oracle_text_sha256(columns: list[str], numbers: np.ndarray, texts: dict[int, list[str]]) -> str:
    """The documented hash of a table with text columns, in one go: per chunk of 65536 rows, the
    SHA-256 of its rows' digest (0.0 in the text columns) then, column by column, the digests of its
    values' UTF-8 byte lengths (uint32 little-endian) and of their bytes."""
    rows = np.asarray(numbers, dtype="<f8")
    digests = b""
    for a in range(0, len(rows), 65536):
        inner = hashlib.sha256(rows[a:a + 65536].tobytes(order="C")).digest()
        for j in sorted(texts):
            encoded = [v.encode("utf-8") for v in texts[j][a:a + 65536]]
            inner += hashlib.sha256(np.array([len(e) for e in encoded], dtype="<u4").tobytes()).digest()
            inner += hashlib.sha256(b"".join(encoded)).digest()
        digests += hashlib.sha256(inner).digest()
    return hashlib.sha256(json.dumps(columns).encode() + b"\n" + digests).hexdigest()


@pytest.mark.parametrize("blocks", [[65536, 65536, 8], [30000, 70000, 31080], [1, 65535, 65536, 8]])
def test_text_columns_are_hashed_per_chunk_as_documented_and_parts_add_up(blocks):
    """Text columns: the oracle's hash for any blocks; and two parts cut on the chunk boundary, each
    hashed on its own (parted), give the same hash through add_chunks."""
    rng = np.random.default_rng(4)
    n = sum(blocks)
    numbers = rng.normal(size=(n, 3))
    numbers[:, 1] = 0.0  # column 1 is text
    texts = {1: [("é" if v else "ab") + str(i % 3) for i, v in enumerate(rng.integers(0, 2, n))]}
    want = _oracle_text_sha256(["y", "g", "x"], numbers, texts)
    digest, at = ContentHash(("y", "g", "x"), (1,)), 0
    for m in blocks:
        digest.update(numbers[at:at + m], {1: np.array(texts[1][at:at + m], dtype=object)})
        at += m
    assert digest.hexdigest() == want
    whole = ContentHash(("y", "g", "x"), (1,))
    for a, b in [(0, 65536), (65536, n)]:
        part = ContentHash(("y", "g", "x"), (1,), parted=True)
        part.update(numbers[a:b], {1: np.array(texts[1][a:b], dtype=object)})
        whole.add_chunks(part.chunks())
    assert whole.hexdigest() == want
    texts[1][70000] = texts[1][70000] + " "  # one value's change changes it
    changed = ContentHash(("y", "g", "x"), (1,))
    changed.update(numbers, {1: np.array(texts[1], dtype=object)})
    assert changed.hexdigest() == _oracle_text_sha256(["y", "g", "x"], numbers, texts) != want


def test_the_parquet_round_trips_the_values_exactly(tmp_path):
    """Reading the stored file gives back every float64 bit for bit, columns in order."""
    frame = pd.DataFrame({"y": [0.1, 1 / 3, -2.5e-300, 1e308, -0.0], "x": [1.0, 2.0, 3.0, 4.0, 5.0]})
    path = _store(tmp_path, frame)
    stored = pd.read_parquet(path)
    pd.testing.assert_frame_equal(stored, frame, check_exact=True)
    assert np.signbit(stored["y"].iloc[-1])


def test_row_groups_hold_block_rows_even_from_tiny_input_batches(tmp_path):
    """3-row input batches are buffered into row groups of 4 rows (the last one shorter)."""
    path = _store(tmp_path, pd.DataFrame({"y": TUTORIAL_Y, "x": TUTORIAL_X}))
    meta = pq.read_metadata(path)
    assert [meta.row_group(g).num_rows for g in range(meta.num_row_groups)] == [4, 4, 2]


def test_the_parquet_carries_provenance_metadata(tmp_path):
    """The file's footer metadata records source, sha256, rows and columns."""
    csv = _tutorial_csv(tmp_path)
    stored = prepare_data(ModelSpec(), csv, tmp_path / "data")
    provenance = json.loads(pq.read_metadata(stored.path).metadata[PROVENANCE])
    assert provenance["source"] == str(csv.resolve())
    assert provenance["sha256"] == stored.sha256
    assert provenance["rows"] == len(TUTORIAL_X)
    assert provenance["columns"] == ["y", "x"]
    assert provenance["written_at"]


@pytest.mark.parametrize("values", ["tutorial", "random-17-digits"])
def test_the_hash_does_not_depend_on_the_input_format(tmp_path, values):
    """The same numbers read from CSV or from Parquet (row groups of 7) get the same hash and file."""
    if values == "tutorial":
        x, y = TUTORIAL_X, TUTORIAL_Y
    else:
        rng = np.random.default_rng(1)
        x = rng.normal(size=200) * 10.0 ** rng.integers(-12, 12, size=200)
        y = rng.normal(size=200)
    csv = tmp_path / "d.csv"
    csv.write_text("x,y\n" + "".join(f"{float(a)!r},{float(b)!r}\n" for a, b in zip(x, y)))
    parquet = tmp_path / "d.parquet"
    pq.write_table(pa.table({"x": x, "y": y}), parquet, row_group_size=7)
    a = prepare_data(ModelSpec(), csv, tmp_path / "data", block_rows=16)
    b = prepare_data(ModelSpec(), parquet, tmp_path / "data", block_rows=5)
    assert a.sha256 == b.sha256 == _oracle_sha256(["y", "x"], np.column_stack([y, x]))
    assert a.path == b.path


def test_an_input_that_is_the_stored_file_is_hashed_but_not_copied(tmp_path, monkeypatch):
    """Running on validated/<sha>.parquet itself: no second file is even begun, and nothing changes."""
    first = prepare_data(ModelSpec(), _tutorial_csv(tmp_path), tmp_path / "data")

    def no_copy(*args: object) -> None:
        raise AssertionError("the stored file was written again")

    monkeypatch.setattr(tasks.ingest.prepare, "StagedParquet", no_copy)
    folder = Path(first.path).parent
    before = {p.name: p.stat().st_mtime_ns for p in [folder, *folder.iterdir()]}
    again = prepare_data(ModelSpec(), Path(first.path), tmp_path / "data", block_rows=3)
    assert (again.path, again.sha256, again.rows) == (first.path, first.sha256, first.rows)
    assert {p.name: p.stat().st_mtime_ns for p in [folder, *folder.iterdir()]} == before


def test_a_stored_file_whose_rows_do_not_match_its_name_is_stored_under_the_right_one(tmp_path):
    """A Parquet file claiming an existing stored file's hash, with other rows, is hashed and stored anew."""
    first = prepare_data(ModelSpec(), _tutorial_csv(tmp_path), tmp_path / "data")
    forged = tmp_path / "forged.parquet"
    table = pa.table({"y": TUTORIAL_Y + 1.0, "x": TUTORIAL_X})
    pq.write_table(table.replace_schema_metadata({PROVENANCE: json.dumps({"sha256": first.sha256,
                                                                         "columns": ["y", "x"]})}), forged)
    other = prepare_data(ModelSpec(), forged, tmp_path / "data")
    assert other.sha256 == _oracle_sha256(["y", "x"], np.column_stack([TUTORIAL_Y + 1.0, TUTORIAL_X]))
    assert other.path != first.path and Path(other.path).is_file()


def test_concurrent_writers_of_the_same_content_all_succeed_and_one_file_is_kept(tmp_path):
    """Eight threads store the same table at once: all return the same path; one whole file, no temp left."""
    csv = _tutorial_csv(tmp_path)
    barrier = threading.Barrier(8)
    results: list[str] = []

    def writer() -> None:
        barrier.wait(timeout=60)
        results.append(prepare_data(ModelSpec(), csv, tmp_path / "data").path)

    threads = [threading.Thread(target=writer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(results) == 8 and len(set(results)) == 1
    assert [p.name for p in (tmp_path / "data" / "validated").iterdir()] == [Path(results[0]).name]
    pd.testing.assert_frame_equal(pd.read_parquet(results[0]), pd.DataFrame({"y": TUTORIAL_Y, "x": TUTORIAL_X}),
                                  check_exact=True)


def test_a_writer_that_loses_the_race_keeps_the_winners_file(tmp_path, monkeypatch):
    """Another writer finishes between our temp file and our link: its file stays as it is, ours goes."""
    sha = _oracle_sha256(["y", "x"], np.column_stack([TUTORIAL_Y, TUTORIAL_X]))
    target = tmp_path / "data" / "validated" / f"{sha}.parquet"

    def other_writer_finishes(point: str) -> None:
        assert point == "stored-temp"
        pq.write_table(pa.table({"y": TUTORIAL_Y, "x": TUTORIAL_X}), target)

    monkeypatch.setattr(tasks.ingest.store, "crash_point", other_writer_finishes)
    stored = prepare_data(ModelSpec(), _tutorial_csv(tmp_path), tmp_path / "data")
    assert Path(stored.path) == target.resolve()
    assert PROVENANCE not in (pq.read_metadata(target).metadata or {}), "the winner's file, not ours"
    assert [p.name for p in target.parent.iterdir()] == [target.name]


def test_a_temp_file_left_by_a_dead_writer_is_removed_and_a_live_ones_kept(tmp_path):
    """A killed writer's half-written temp file goes with the next write; a live writer's stays."""
    folder = tmp_path / "data" / "validated"
    folder.mkdir(parents=True)
    child = subprocess.run([sys.executable, "-c", "from tasks.tempfiles import temp_name; "
                            "print(temp_name('.tmp-', '.parquet'))"],
                           capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[1])
    dead, live = child.stdout.strip(), temp_name(".tmp-", ".parquet")
    for name in (dead, live):
        (folder / name).write_bytes(b"PAR1 half written")
    stored = prepare_data(ModelSpec(), _tutorial_csv(tmp_path), tmp_path / "data")
    assert sorted(p.name for p in folder.iterdir()) == sorted([live, Path(stored.path).name])


def test_without_o_tmpfile_the_temp_file_is_named_and_removed_with_its_folders_on_error(tmp_path, monkeypatch):
    """Where the filesystem has no unnamed files, the temp file is named from the start: stored as
    usual on success; on a rejection it goes, and so do the folders the write made."""
    monkeypatch.delattr(os, "O_TMPFILE", raising=False)
    stored = prepare_data(ModelSpec(), _tutorial_csv(tmp_path), tmp_path / "data", block_rows=3)
    assert [p.name for p in (tmp_path / "data" / "validated").iterdir()] == [Path(stored.path).name]
    bad = tmp_path / "collinear.csv"
    bad.write_text("x1,x2,y\n1,2,1.5\n2,4,2.9\n3,6,4.2\n4,8,4.8\n5,10,6.1\n")
    with pytest.raises(UserInputError, match="rank deficient"):
        prepare_data(ModelSpec(), bad, tmp_path / "new" / "data", block_rows=3)
    assert not (tmp_path / "new").exists()
    with pytest.raises(UserInputError, match="rank deficient"):
        prepare_data(ModelSpec(), bad, tmp_path / "data", block_rows=3)
    assert [p.name for p in (tmp_path / "data" / "validated").iterdir()] == [Path(stored.path).name]
