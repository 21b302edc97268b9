"""The ingest pass part by part, where a Passes' map runs them (the workers of a Dask cluster).

The table's rows are cut into parts that start on a chunk boundary of the content hash
(store.HASH_CHUNK_ROWS), about passes.parts of them. Each part reads only its own rows of the input
(its files' row groups, from local disk or the object store), checks them, folds them (fold.Fold:
statistics, Gram sums, missing cells, levels, its chunks' digests) and writes them as one part file
of the stored table, in a temporary folder; the caller merges the folds in row order, so the hash,
the statistics and every message equal the one-machine pass's (errors: the first part's, in row order).

The stored table is then the folder validated/<sha256>.parquet of part files part-00000.parquet, ...,
in row order (the layout Dask and Spark write; pandas and pyarrow read it as one table), with the
provenance in its PART_MARKER file. On a local disk the temporary folder, complete with its marker,
is renamed to that name (atomic; a folder of that name already there wins). On an object store the
parts are copied there within the store and the marker is written last: a folder without it is not
a stored table (store.stored_exists), and a later run of this host removes what a killed run left.

Where --missing drop left rows out of a part before the last, its kept rows no longer start on a
chunk boundary: the hash is then computed by a second pass, part by part, over the stored parts.
A CSV file is read on the machine that starts the run (prepare.py): it cannot be cut into parts
without reading it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tasks.config import ModelSpec
from tasks.errors import UserInputError
from tasks.faults import crash_point
from tasks.ingest.fold import STAGES, Clock, Fold, Kinds
from tasks.ingest.load import Input, ParquetInput, open_input
from tasks.ingest.store import (HASH_CHUNK_ROWS, TEMP, ContentHash, RowGroupWriter, provenance, stored_exists,
                                stored_file)
from tasks.kernels.gram import GramSums
from tasks.kernels.passes import Passes
from tasks.kernels.table import PART_MARKER, ColumnStats, part_files
from tasks.storage import Location, filesystem, is_url, join, shown, storage_error, upload
from tasks.tempfiles import is_stale, remove_stale, temp_name


def parted_ingest(source: Input) -> bool:
    """Whether the input can be ingested part by part: Parquet (a file, a folder, a prefix)."""
    return isinstance(source, ParquetInput)


def part_bounds(rows: int, parts: int) -> list[tuple[int, int]]:
    """[a, b) of up to `parts` runs of consecutive rows, each starting on a hash chunk boundary."""
    chunks = max(1, -(-rows // HASH_CHUNK_ROWS))
    n = max(1, min(parts, chunks))
    cuts = [min(rows, (i * chunks // n) * HASH_CHUNK_ROWS) for i in range(n)] + [rows]
    return [(a, b) for a, b in zip(cuts[:-1], cuts[1:])]


@dataclass(frozen=True)
class PartJob:
    """One part of the ingest: the rows [a, b) of the input, written to `file` (a path or a URL)."""

    spec: ModelSpec
    source: ParquetInput
    columns: tuple[str, ...]
    kinds: Kinds
    rows: tuple[int, int]
    block_rows: int
    file: Location


@dataclass(frozen=True)
class PartResult:
    """What a part's fold gathered (error: the message of its first bad value, if any)."""

    error: str | None
    stats: ColumnStats | None = None
    digests: tuple[bytes, ...] = ()
    missing: tuple[list[int], list] = ([], [])
    levels: dict[str, set] = dataclasses.field(default_factory=dict)
    distinct: frozenset = frozenset()
    gram: GramSums | None = None
    dropped: int = 0
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)


def ingest_part(job: PartJob) -> PartResult:
    """Read, check, fold and write one part (runs where the map puts it: it reads and writes itself)."""
    clock = Clock()
    fold = Fold(job.spec, job.source, job.columns, job.kinds, parted=True)
    local = job.file if not is_url(job.file) else Path(tempfile.mkdtemp(prefix="linreg-part-")) / "part.parquet"
    try:
        writer = RowGroupWriter(str(local), fold.stored, job.block_rows, fold.text)
        try:
            fold.add_all(job.source.blocks(fold.stored, job.block_rows, job.rows), writer, clock)
        except UserInputError as exc:
            writer.abandon()
            return PartResult(str(exc))
        with clock("store"):
            writer.close()
            digests = tuple(fold.digest.chunks())
            if is_url(job.file):
                upload(local, job.file)
    finally:
        if is_url(job.file):
            shutil.rmtree(Path(local).parent, ignore_errors=True)
    return PartResult(None, fold.stats, digests, (fold.missing.count, fold.missing.first), fold.levels.seen,
                      frozenset(fold.distinct.seen), fold.gram, fold.dropped, clock.seconds)


def ingest_parts(fold: Fold, staged: PartsStaging, passes: Passes, clock: Clock) -> tuple[Fold, int]:
    """The whole table's fold (a new, not parted one), from its parts run by passes.map; and how many."""
    source = fold.source
    jobs = [PartJob(fold.spec, source, fold.columns, fold.kinds, rows, staged.block_rows, staged.part(i))
            for i, rows in enumerate(part_bounds(source.starts[-1], passes.parts))]
    start = time.perf_counter()
    results = passes.map(ingest_part, jobs)
    wall = time.perf_counter() - start
    whole = Fold(fold.spec, source, fold.columns, fold.kinds)
    for result in results:  # in row order: the first bad value's part wins, as in one pass
        if result.error is not None:
            raise UserInputError(result.error)
    # Rows left out before the last part: the parts' kept rows miss the chunk boundaries (and with
    # missing cells counted the run fails below: no hash needed).
    realigned = any(r.dropped for r in results[:-1]) and not any(any(r.missing[0]) for r in results)
    whole.digest.add_chunks(_rehash(staged, fold.stored, fold.text, passes) if realigned
                            else [d for r in results for d in r.digests])
    for result in results:
        whole.merge(result)
    # The stages' seconds: the parts' wall time, shared as the parts spent their own.
    spent = {stage: sum(r.seconds.get(stage, 0.0) for r in results) for stage in STAGES}
    total = sum(spent.values()) or 1.0
    for stage in STAGES:
        clock.seconds[stage] += wall * spent[stage] / total
    return whole, len(jobs)


@dataclass(frozen=True)
class HashJob:
    """The content hash's chunks of rows [a, b) of a stored table (a start on a chunk boundary)."""

    table: ParquetInput
    columns: tuple[str, ...]
    text: tuple[int, ...]
    rows: tuple[int, int]


def hash_part(job: HashJob) -> tuple[bytes, ...]:
    digest = ContentHash(job.columns, job.text, parted=True)
    for raw in job.table.blocks(job.columns, HASH_CHUNK_ROWS, job.rows):
        values = [c.to_numpy(zero_copy_only=False) for c in raw.columns]
        rows = np.column_stack([np.zeros(len(v)) if j in job.text else v.astype(np.float64)
                                for j, v in enumerate(values)])
        digest.update(rows, {j: values[j] for j in job.text})
    return tuple(digest.chunks())


def _rehash(staged: PartsStaging, columns: tuple[str, ...], text: tuple[int, ...], passes: Passes) -> list[bytes]:
    """The chunk digests of the stored parts' rows, where --missing drop left rows out of a part
    before the last: a second pass, part by part, over the stored rows (the kept rows of a part do
    not start on a chunk boundary of the table)."""
    table = open_input(staged.path)
    jobs = [HashJob(table, columns, text, rows) for rows in part_bounds(table.starts[-1], passes.parts)]
    return [d for digests in passes.map(hash_part, jobs) for d in digests]


class PartsStaging:
    """The stored table while the parts are written: a temporary folder (a prefix, on an object
    store) validated/.tmp-<owner>.parquet/ of the data folder, named validated/<sha>.parquet by
    publish(). Use as a context manager: leaving it without publish() removes the folder, and any
    folder it made, and puts back the times of the folder it was made in (nothing changed)."""

    def __init__(self, data_dir: Location, columns: tuple[str, ...], block_rows: int) -> None:
        self.columns, self.block_rows, self.url = columns, block_rows, data_dir if is_url(data_dir) else None
        self._doc: dict | None = None
        self._published = False
        name = temp_name(*TEMP)
        if self.url is not None:
            self.path = str(join(self.url, "validated", name))
            return
        self.folder = Path(data_dir).absolute() / "validated"
        self._created = [p for p in reversed([self.folder, *self.folder.parents]) if not p.exists()]
        anchor = next(p for p in [self.folder, *self.folder.parents] if p.exists())
        self._anchor = (anchor, anchor.stat().st_atime_ns, anchor.stat().st_mtime_ns)
        (self.folder / name).mkdir(parents=True)
        self.path = str(self.folder / name)

    def part(self, i: int) -> Location:
        return join(self.path if self.url else Path(self.path), f"part-{i:05d}.parquet")

    def finish(self, source: str, sha: str, rows: int) -> None:
        """Record the provenance (in the folder's marker: now on a local disk, at publish() on a store)."""
        self._doc = provenance(source, sha, rows, self.columns)
        if self.url is None:
            marker = Path(self.path) / PART_MARKER
            with open(marker, "w", encoding="utf-8") as handle:
                json.dump(self._doc, handle)
                handle.flush()
                os.fsync(handle.fileno())

    def publish(self, sha: str) -> str:
        """Name the complete folder validated/<sha>.parquet (unless a stored table is there already);
        return its absolute path (its URL on an object store)."""
        if self.url is not None:
            shown_target = self._publish_url(sha)
            self._published = True
            return shown_target
        target = stored_file(self.folder.parent, sha)
        remove_stale(self.folder, (TEMP,))  # what a killed run left (never ours: this process runs)
        crash_point("stored-temp")
        if not stored_exists(target):
            try:
                os.rename(self.path, target)  # atomic; fails on a non-empty folder or a file of that name
            except OSError:
                if not stored_exists(target):
                    raise
        self._published = True
        shutil.rmtree(self.path, ignore_errors=True)  # renamed: gone; else the same content, stored by someone else
        return str(target.resolve())

    def _publish_url(self, sha: str) -> str:
        target = str(stored_file(self.url, sha))
        fs, temp = filesystem(self.path)
        _, final = filesystem(target)
        try:
            _remove_stale_prefixes(fs, temp.rsplit("/", 1)[0])
            if not stored_exists(target):
                parts = [filesystem(part)[1] for part in part_files(self.path)]
                # Copies within the store, all at once (s3fs runs them concurrently): no byte through here.
                fs.copy(parts, [f"{final}/{inner.rsplit('/', 1)[-1]}" for inner in parts])
                crash_point("stored-temp")
                fs.pipe_file(f"{final}/{PART_MARKER}", json.dumps(self._doc).encode("utf-8"))  # last: complete
            fs.rm(temp, recursive=True)
        except UserInputError:
            raise
        except Exception as exc:  # noqa: BLE001 - each store raises its own kinds
            raise storage_error(target, exc) from None
        return shown(target)

    def __enter__(self) -> PartsStaging:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._published:
            return
        if self.url is not None:
            fs, temp = filesystem(self.path)
            try:
                if fs.exists(temp):
                    fs.rm(temp, recursive=True)
            except Exception:  # noqa: BLE001 - a later run of this host removes it (owner rule)
                pass
            return
        shutil.rmtree(self.path, ignore_errors=True)
        for folder in reversed(self._created):  # only folders this write made, and only when empty
            try:
                folder.rmdir()
            except OSError:
                break
        anchor, atime, mtime = self._anchor
        os.utime(anchor, ns=(atime, mtime))


def _remove_stale_prefixes(fs, validated: str) -> None:
    """Remove the temporary prefixes under validated/ that a killed run of this host left (owner rule)."""
    try:
        fs.invalidate_cache(validated)
        names = fs.ls(validated, detail=False)
    except FileNotFoundError:
        return
    for name in names:
        if is_stale(name.rstrip("/").rsplit("/", 1)[-1], *TEMP):
            fs.rm(name, recursive=True)
