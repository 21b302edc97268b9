"""Store step: the validated table, written once as Parquet named by the SHA-256 of its content.

The file is written during the pass that validates the rows, into an unnamed file (Linux O_TMPFILE)
on the data folder's filesystem, so a rejected input leaves no trace there, not even a changed folder
time. Only after every check has passed does it get a name: an owner-named temp file
(tasks/tempfiles.py), hard-linked to validated/<sha256>.parquet, which fails when a concurrent writer
of the same content got there first (then its file stays, ours goes). Without O_TMPFILE the temp
file is named from the start; on error it is removed and the folder's times are put back.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.faults import crash_point
from tasks.kernels.table import PART_MARKER
from tasks.storage import Location, filesystem, is_url, join, shown, storage_error, upload
from tasks.tempfiles import remove_stale, temp_name

TEMP = (".tmp-", ".parquet")  # prefix and suffix of a temp file in validated/
PROVENANCE = b"linreg_flow.provenance"  # the footer key of where a stored file came from


# Rows per chunk of the content hash: its definition, not a tuning knob (another value is another hash).
HASH_CHUNK_ROWS = 65536
_IN_FLIGHT = 4  # chunk digests computing at once (each holds its chunk's bytes)


def _sha256(data: np.ndarray) -> bytes:
    return hashlib.sha256(data).digest()  # hashlib releases the GIL: chunks hash on both cores


class ContentHash:
    """SHA-256 of a table's content, fed block by block:

        sha256(json.dumps(columns).encode("utf-8") + b"\\n" + D_0 + D_1 + ...),
        D_i = sha256(rows [65536 i, 65536 (i + 1)) as float64 little-endian).digest()

    with the rows in order, each row's values in column order (row-major), cut into chunks of
    HASH_CHUNK_ROWS rows counted from the table's first row (the last chunk may be shorter): any
    split into blocks of rows gives the same hash, and so does any file format, encoding or Parquet
    writer. The chunks' digests are computed on threads, in parallel, and parts of a table that start
    on a chunk boundary can compute theirs on their own. (Before issue 19 the rows were hashed as one
    stream, sha256(header + rows): the same table now has another name.)

    A table with text columns (a formula's categorical columns, `text`: their indexes) has 0.0 in
    their place in those rows, and each chunk's text values are hashed beside its numbers: for each
    text column in order, the UTF-8 byte length of each value (uint32 little-endian) and the values'
    bytes, each as one SHA-256; then D_i = sha256(the rows' digest + those digests, column by column).
    """

    def __init__(self, columns: tuple[str, ...], text: tuple[int, ...] = (), parted: bool = False) -> None:
        """parted: the hash of a part of the table that starts on a chunk boundary: chunks() returns
        its chunks' digests, which add_chunks() adds to the whole table's hash."""
        self._parted: list[bytes] | None = [] if parted else None
        self._digest = hashlib.sha256(json.dumps(list(columns)).encode("utf-8") + b"\n")
        self._text = text
        self._current = _ChunkHash(text)  # the chunk being filled piece by piece
        self._filled = 0  # its rows so far
        # Chunk digests in row order; some computing: (its rows' digest on a thread, its text digests)
        self._pending: deque[tuple[Future, bytes] | bytes] = deque()

    def update(self, block: np.ndarray, texts: dict[int, np.ndarray] | None = None) -> None:
        """block: (m, k) float64 rows (0.0 in the text columns); texts: column index -> (m,) strings."""
        rows = np.ascontiguousarray(block, dtype="<f8")
        at = 0
        while at < len(rows):
            take = min(HASH_CHUNK_ROWS - self._filled, len(rows) - at)
            piece = rows[at:at + take]
            pieces = {j: texts[j][at:at + take] for j in self._text}
            if take == HASH_CHUNK_ROWS:  # a whole chunk (blocks of 65536 rows: every one): on a thread
                if np.may_share_memory(piece, block):  # hashed later: never the caller's buffer
                    piece = piece.copy()
                whole = _ChunkHash(self._text)
                whole.add_text(pieces)
                self._pending.append((_hasher().submit(_sha256, piece), whole.text_digests()))
            else:  # a chunk that straddles blocks: fed piece by piece here, nothing buffered
                self._current.rows.update(piece)
                self._current.add_text(pieces)
                self._filled += take
                if self._filled == HASH_CHUNK_ROWS:
                    self._pending.append(self._current.digest())
                    self._current, self._filled = _ChunkHash(self._text), 0
            at += take
            self._fold()

    def _fold(self, every: bool = False) -> None:
        """Add the chunk digests that are ready (every one: wait for them) to the running hash, in
        order; at most _IN_FLIGHT chunks stay computing (each holds its chunk's bytes)."""
        while self._pending:
            head = self._pending[0]
            if isinstance(head, tuple) and not (every or head[0].done() or len(self._pending) > _IN_FLIGHT):
                return
            self._pending.popleft()
            digest = head if isinstance(head, bytes) else _chunk_digest(head[0].result(), head[1], self._text)
            if self._parted is not None:
                self._parted.append(digest)
            else:
                self._digest.update(digest)

    def _close_chunk(self) -> None:
        if self._filled:
            self._pending.append(self._current.digest())
            self._current, self._filled = _ChunkHash(self._text), 0
        self._fold(every=True)

    def chunks(self) -> list[bytes]:
        """A part's chunk digests, in row order (its last chunk may be short only at the table's end)."""
        self._close_chunk()
        return list(self._parted or ())

    def add_chunks(self, digests: list[bytes]) -> None:
        """Add the digests of the chunks that follow (a part's, in row order), as if its rows were added."""
        if self._filled or self._pending:
            raise ValueError("chunks of a part follow whole chunks only")
        self._digest.update(b"".join(digests))

    def hexdigest(self) -> str:
        self._close_chunk()
        return self._digest.hexdigest()


class _ChunkHash:
    """One chunk's hashes while it is filled: its rows', and each text column's lengths and bytes."""

    def __init__(self, text: tuple[int, ...]) -> None:
        self.rows = hashlib.sha256()
        self.text = {j: (hashlib.sha256(), hashlib.sha256()) for j in text}

    def add_text(self, pieces: dict[int, np.ndarray]) -> None:
        for j, (lengths, data) in self.text.items():
            encoded = [v.encode("utf-8") for v in pieces[j]]
            lengths.update(np.array([len(e) for e in encoded], dtype="<u4").tobytes())
            data.update(b"".join(encoded))

    def text_digests(self) -> bytes:
        return b"".join(d.digest() for pair in self.text.values() for d in pair)

    def digest(self) -> bytes:
        return _chunk_digest(self.rows.digest(), self.text_digests(), tuple(self.text))


def _chunk_digest(rows: bytes, text: bytes, columns: tuple[int, ...]) -> bytes:
    """D_i: the rows' digest alone for a table of numbers, else sha256(it + the text columns' digests)."""
    return hashlib.sha256(rows + text).digest() if columns else rows


def _hasher() -> ThreadPoolExecutor:
    with _HASHER_LOCK:
        if not _HASHER:
            _HASHER.append(ThreadPoolExecutor(max_workers=2, thread_name_prefix="linreg-hash"))
        return _HASHER[0]


_HASHER: list[ThreadPoolExecutor] = []
_HASHER_LOCK = threading.Lock()


def stored_file(data_dir: Location, sha: str) -> Location:
    """validated/<sha>.parquet in the data folder (a Path), or under its URL (a str)."""
    return join(data_dir if is_url(data_dir) else Path(data_dir), "validated", f"{sha}.parquet")


def stored_copy(metadata: dict[bytes, bytes], columns: tuple[str, ...], data_dir: Location) -> str | None:
    """The sha256 a Parquet input's footer names when it is a stored copy of exactly these columns
    and validated/<sha256>.parquet exists in data_dir; None otherwise. A claim to be confirmed by
    hashing the rows."""
    try:
        doc = json.loads(metadata[PROVENANCE])
        sha, named = str(doc["sha256"]), list(doc["columns"])
    except (KeyError, TypeError, ValueError):
        return None
    if named != list(columns) or not re.fullmatch("[0-9a-f]{64}", sha):
        return None
    return sha if stored_exists(stored_file(data_dir, sha)) else None


def stored_exists(target: Location) -> bool:
    """Whether a complete stored table is at validated/<sha>.parquet: a file, or a folder of parts
    (written by the workers of a cluster: tasks/ingest/parts.py) with its PART_MARKER, which goes in last."""
    if not is_url(target):
        return Path(target).is_file() or (Path(target) / PART_MARKER).is_file()
    fs, path = filesystem(target)
    try:
        return fs.isfile(path) or fs.isfile(f"{path}/{PART_MARKER}")
    except Exception as exc:  # noqa: BLE001 - each store raises its own kinds
        raise storage_error(target, exc) from None


def provenance(source: str, sha: str, rows: int, columns: tuple[str, ...]) -> dict:
    """Where a stored table came from: its footer key PROVENANCE (a folder table's PART_MARKER file)."""
    return {"source": source, "sha256": sha, "rows": rows, "columns": list(columns),
            "written_at": datetime.now(timezone.utc).isoformat(), "writer": "linreg-flow"}


class RowGroupWriter:
    """A Parquet file written from (m,) columns as they come, in row groups of block_rows rows (tiny
    input batches wait for a whole group): plain float64 pages (text columns as strings), no
    compression, so that the passes over it decode at memory speed."""

    def __init__(self, path: str, columns: tuple[str, ...], block_rows: int, text: tuple[int, ...] = ()) -> None:
        self.block_rows = block_rows
        self._schema = pa.schema([(c, pa.string() if j in text else pa.float64()) for j, c in enumerate(columns)])
        self._pending: list[list[np.ndarray]] = []
        self._pending_rows = 0
        self._writer = pq.ParquetWriter(path, self._schema, compression="none", use_dictionary=False)

    def write(self, values: list[np.ndarray]) -> None:
        """Append rows given as one (m,) array per column: float64, or Python strings for a text column."""
        self._pending.append(values)
        self._pending_rows += len(values[0])
        if self._pending_rows >= self.block_rows:
            self._flush(final=False)

    def _flush(self, final: bool) -> None:
        if not self._pending_rows:
            return
        columns = [np.concatenate(parts) if len(parts) > 1 else parts[0] for parts in zip(*self._pending)]
        rows = self._pending_rows
        keep = 0 if final else rows % self.block_rows  # tiny input batches wait for a whole row group
        table = pa.Table.from_arrays([pa.array(c[: rows - keep], type=f.type) for c, f in zip(columns, self._schema)],
                                     schema=self._schema)
        self._writer.write_table(table, row_group_size=self.block_rows)
        self._pending = [[c[rows - keep:] for c in columns]] if keep else []
        self._pending_rows = keep

    def close(self, metadata: dict[str, str] | None = None) -> None:
        """Write the last rows and the footer (with metadata as its key-value pairs)."""
        self._flush(final=True)
        if metadata:
            self._writer.add_key_value_metadata(metadata)
        self._writer.close()

    def abandon(self) -> None:
        """Close the file, complete or not (its owner discards it)."""
        if self._writer.is_open:
            self._writer.close()


def _nearest_folder(folder: Path) -> Path:
    """The nearest existing folder on the way to `folder`: the filesystem the stored file lives on."""
    while not folder.is_dir():
        folder = folder.parent
    return folder


class StagedParquet:
    """The stored Parquet while it is written: (m,) float64 columns (text for a formula's text columns)
    in, row groups of block_rows out.

    path: where it can be read before publish() names it. Use as a context manager: leaving it
    without publish() discards the file (and any folder it made). A data folder at a URL (an object
    store) is written in a local temporary folder, and publish() uploads the file to
    URL/validated/<sha256>.parquet (one object: it appears whole or not at all), unless it is there.
    """

    def __init__(self, data_dir: Location, columns: tuple[str, ...], block_rows: int, text: tuple[int, ...] = ()) -> None:
        self.url = data_dir if is_url(data_dir) else None
        staging = Path(tempfile.gettempdir()) / "linreg-staged" if self.url else Path(data_dir)
        self.folder = staging.absolute() / "validated"
        self.block_rows, self.columns = block_rows, columns
        self._created, self._named = list[Path](), None
        self._anchor: tuple[Path, int, int] | None = None
        try:
            self._fd = os.open(_nearest_folder(self.folder), os.O_TMPFILE | os.O_RDWR, 0o666)
            self.path = f"/proc/self/fd/{self._fd}"
        except (AttributeError, OSError):  # no O_TMPFILE here (not Linux, or not this filesystem)
            self._created = [p for p in reversed([self.folder, *self.folder.parents]) if not p.exists()]
            anchor = _nearest_folder(self.folder)
            # Its times, put back if the file is discarded: "nothing changed" includes a folder's mtime.
            self._anchor = (anchor, anchor.stat().st_atime_ns, anchor.stat().st_mtime_ns)
            self.folder.mkdir(parents=True, exist_ok=True)
            self._named = self.folder / temp_name(*TEMP)
            self._fd = os.open(self._named, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o666)
            self.path = str(self._named)
        try:
            self._writer = RowGroupWriter(self.path, columns, block_rows, text)
        except BaseException:
            self._discard()
            raise

    def write(self, values: list[np.ndarray]) -> None:
        """Append rows given as one (m,) array per column: float64, or Python strings for a text column."""
        self._writer.write(values)

    def finish(self, source: str, sha: str, rows: int) -> None:
        """Write the last rows and the provenance (footer key-value metadata), then fsync."""
        self._writer.close({PROVENANCE.decode(): json.dumps(provenance(source, sha, rows, self.columns))})
        os.fsync(self._fd)

    def publish(self, sha: str) -> str:
        """Name the finished file validated/<sha>.parquet (unless that exists); return its absolute path
        (its URL, for a data folder on an object store)."""
        if self.url is not None:
            target = stored_file(self.url, sha)
            if not stored_exists(target):
                upload(self.path, target)
            return shown(target)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._created, self._anchor = [], None
        target = stored_file(self.folder.parent, sha)
        remove_stale(self.folder, (TEMP,))  # what a killed run left; one listdir
        if stored_exists(target):
            return str(target.resolve())
        if self._named is None:
            self._named = self.folder / temp_name(*TEMP)
            folder_fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY)
            try:  # with dir fds, os.link is linkat(..., AT_SYMLINK_FOLLOW): it links the unnamed file itself
                os.link(self.path, self._named.name, src_dir_fd=folder_fd, dst_dir_fd=folder_fd)
            finally:
                os.close(folder_fd)
        crash_point("stored-temp")
        try:
            os.link(self._named, target)  # atomic, and never replaces an existing file
        except FileExistsError:
            pass  # the same content, written by someone else
        return str(target.resolve())

    def __enter__(self) -> StagedParquet:
        return self

    def __exit__(self, *exc: object) -> None:
        self._writer.abandon()
        self._discard()

    def _discard(self) -> None:
        os.close(self._fd)  # an unnamed file vanishes with its last descriptor
        if self._named is not None:
            self._named.unlink(missing_ok=True)
        for folder in reversed(self._created):  # only folders this write made, and only when empty
            try:
                folder.rmdir()
            except OSError:
                return
        if self._anchor is not None:
            anchor, atime, mtime = self._anchor
            os.utime(anchor, ns=(atime, mtime))
