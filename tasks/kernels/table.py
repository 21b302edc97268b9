"""Tables read in blocks of rows, and column statistics merged block by block (Chan et al. 1979).

A table is a sequence of float64 blocks of shape (m, k), columns in a fixed order (the target
first). Everything the pipeline computes from the data is a fold over these blocks, so memory is
bounded by the block size, never by the number of rows.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tasks.storage import filesystem, is_url, readable

# Rows per block: 65536 x 17 float64 columns is 9 MB, and the double-double passes' temporaries a
# few times that; large enough that numpy's per-call overhead vanishes.
BLOCK_ROWS = 65536
# Values per array that a pass builds from a block (its terms, basis rows and their temporaries):
# 2^20, 8 MB. A wide design (a formula's dummy columns) reads fewer rows per block, so that the
# block's arrays, not its row count, bound the memory (measured at 1e6 rows x 57 terms: 16384-row
# blocks peak 100 MiB lower than 65536-row ones, and run faster in cache).
BLOCK_VALUES = 2**20


def read_rows(block_rows: int, width: int) -> int:
    """Rows per block for a design of `width` term columns: block_rows, halved while a block of the
    terms would hold more than BLOCK_VALUES values (down to 4096 rows)."""
    rows = block_rows
    while rows > 4096 and rows * width > BLOCK_VALUES:
        rows //= 2
    return rows


@dataclass(frozen=True)
class ColumnStats:
    """count, mean, m2 = sum (v - mean)^2, min, max of each of k columns; all arrays (k,).

    Blocks merge in any order and grouping with Chan's pairwise update, which stays accurate where
    the textbook sum of squares minus n mean^2 cancels.
    """

    count: int
    mean: np.ndarray
    m2: np.ndarray
    min: np.ndarray
    max: np.ndarray

    @classmethod
    def of(cls, block: np.ndarray) -> ColumnStats:
        """Statistics of one (m, k) block, m >= 1."""
        mean = block.mean(axis=0)
        d = block - mean
        np.square(d, out=d)  # in place: one temporary, not two
        return cls(block.shape[0], mean, d.sum(axis=0), block.min(axis=0), block.max(axis=0))

    @classmethod
    def empty(cls, k: int) -> ColumnStats:
        return cls(0, np.zeros(k), np.zeros(k), np.full(k, np.inf), np.full(k, -np.inf))

    def merge(self, other: ColumnStats) -> ColumnStats:
        """Both groups' statistics: mean = mean_a + d n_b / n, m2 = m2_a + m2_b + d^2 n_a n_b / n."""
        if other.count == 0:
            return self
        if self.count == 0:
            return other
        n = self.count + other.count
        d = other.mean - self.mean
        return ColumnStats(
            n,
            self.mean + d * (other.count / n),
            self.m2 + other.m2 + d * d * (self.count * (other.count / n)),
            np.minimum(self.min, other.min),
            np.maximum(self.max, other.max),
        )

    def column(self, j: int | slice) -> ColumnStats:
        """The statistics of some of the columns."""
        pick = (lambda a: np.atleast_1d(a[j]))
        return ColumnStats(self.count, pick(self.mean), pick(self.m2), pick(self.min), pick(self.max))

    @property
    def norm(self) -> np.ndarray:
        """Euclidean norm of each centered column, sqrt(m2)."""
        return np.sqrt(self.m2)

    @property
    def absmax(self) -> np.ndarray:
        return np.maximum(np.abs(self.min), np.abs(self.max))

    def to_json(self) -> dict:
        return {"count": self.count, **{k: getattr(self, k).tolist() for k in ("mean", "m2", "min", "max")}}

    @classmethod
    def from_json(cls, doc: dict) -> ColumnStats:
        return cls(int(doc["count"]), *(np.array(doc[k], dtype=np.float64) for k in ("mean", "m2", "min", "max")))


def stats_of(blocks: Iterator[np.ndarray], k: int) -> ColumnStats:
    total = ColumnStats.empty(k)
    for block in blocks:
        if block.shape[0]:
            total = total.merge(ColumnStats.of(block))
    return total


@dataclass(frozen=True)
class ArrayTable:
    """A table held in memory: data (n, k), read in blocks of block_rows rows (tests use 3)."""

    data: np.ndarray
    columns: tuple[str, ...]
    block_rows: int = BLOCK_ROWS

    @property
    def rows(self) -> int:
        return int(self.data.shape[0])

    def blocks(self) -> Iterator[np.ndarray]:
        for a in range(0, self.rows, self.block_rows):
            yield self.data[a:a + self.block_rows]

    @cached_property
    def stats(self) -> ColumnStats:
        return stats_of(self.blocks(), len(self.columns))

    def split(self, parts: int) -> list[ArrayTable]:
        """Up to `parts` tables of consecutive rows (each with its own stats), in row order."""
        bounds = np.linspace(0, self.rows, max(1, min(parts, self.rows)) + 1).astype(int)
        return [ArrayTable(self.data[a:b], self.columns, self.block_rows) for a, b in zip(bounds[:-1], bounds[1:])]


PART_MARKER = "_linreg.json"  # in a folder table of parts: its provenance, written when it is complete


def part_files(path: str) -> list[str]:
    """The files of a stored table, in row order: the file itself, or the *.parquet parts of a folder
    (a URL prefix too), in name order; names starting with _ or . are not parts (as pyarrow's)."""
    if is_url(path):
        fs, inner = filesystem(path)
        if not fs.isdir(inner):
            return [path]
        names = fs.ls(inner, detail=False)
        return sorted(fs.unstrip_protocol(n) for n in names if _is_part(n.rsplit("/", 1)[-1]))
    if not Path(path).is_dir():
        return [path]
    return sorted(str(p) for p in Path(path).iterdir() if _is_part(p.name))


def _is_part(name: str) -> bool:
    return name.endswith(".parquet") and not name.startswith(("_", "."))


@dataclass(frozen=True)
class ParquetTable:
    """Some float64 columns of a stored Parquet table, streamed in blocks (never the whole table in
    memory): one file, or a folder of part files read one after another (part_files).

    rows and stats come from the pass that validated the file; row_groups: the part of the table
    this table covers, numbered over the files of its layout in order (None: all), so that workers
    can each take a share (a part's layout holds only its own files); levels: for a string column,
    its sorted levels: a block holds the index of each value in them (as float64).
    """

    path: str
    columns: tuple[str, ...]
    rows: int
    stats: ColumnStats = field(compare=False)
    block_rows: int = BLOCK_ROWS
    row_groups: tuple[int, ...] | None = None
    levels: Mapping[str, tuple] = field(default_factory=dict, compare=False)

    @cached_property
    def layout(self) -> tuple[tuple[str, tuple[int, ...]], ...]:
        """(file, rows of each of its row groups) of each file, in order (read from the footers once)."""
        out = []
        for file in part_files(self.path):
            with readable(file) as source:
                meta = pq.read_metadata(source)
            out.append((file, tuple(meta.row_group(g).num_rows for g in range(meta.num_row_groups))))
        return tuple(out)

    def _group_rows(self) -> list[int]:
        return [rows for _, groups in self.layout for rows in groups]

    def split(self, parts: int) -> list[ParquetTable]:
        """Up to `parts` tables of consecutive row groups, in row order (stats stay the whole table's)."""
        sizes = self._group_rows()
        groups = self.row_groups if self.row_groups is not None else tuple(range(len(sizes)))
        bounds = np.linspace(0, len(groups), max(1, min(parts, len(groups))) + 1).astype(int)
        firsts = np.cumsum([0] + [len(g) for _, g in self.layout])  # each file's first group, numbered over all
        out = []
        for a, b in zip(bounds[:-1], bounds[1:]):
            chosen = groups[a:b]
            # The part carries the layout of its own files only (not every file's, to every worker).
            lo = int(np.searchsorted(firsts, chosen[0], side="right")) - 1 if chosen else 0
            hi = int(np.searchsorted(firsts, chosen[-1], side="right")) if chosen else 0
            table = ParquetTable(self.path, self.columns, sum(sizes[g] for g in chosen), self.stats, self.block_rows,
                                 tuple(g - int(firsts[lo]) for g in chosen), self.levels)
            table.__dict__["layout"] = self.layout[lo:hi]  # known: not read again
            out.append(table)
        return out

    def _pieces(self) -> Iterator[tuple[str, list[int] | None]]:
        """(file, its row groups this table covers (None: all)), for each file it covers, in order."""
        if self.row_groups is None and "layout" not in self.__dict__ and not _maybe_folder(self.path):
            yield self.path, None  # one whole file: no footer to read first
            return
        wanted = set(range(len(self._group_rows()))) if self.row_groups is None else set(self.row_groups)
        first = 0
        for file, groups in self.layout:
            mine = [g - first for g in range(first, first + len(groups)) if g in wanted]
            first += len(groups)
            if mine:
                yield file, mine

    def blocks(self) -> Iterator[np.ndarray]:
        """The blocks in row order, each decoded while the caller works on the one before (the Arrow
        batches are prefetched; the float64 block is made here, in the caller's thread, so that its
        memory comes from and goes back to the caller's malloc arena)."""
        for batch in prefetched(self._batches):
            # (k, m) stacked then viewed as (m, k): one copy, and each column stays contiguous
            # (measured 1.6 s instead of 2.6 s per pass at 1e7 x 16 against column_stack).
            yield np.stack([self._float64(name, c) for name, c in zip(self.columns, batch.columns)]).T \
                if batch.num_rows else np.empty((0, len(self.columns)))

    def _batches(self, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
        # pre_buffer=False: pyarrow would otherwise read whole row groups (the file, for one
        # group) into memory ahead of the batches. use_threads: the columns decode on pyarrow's
        # thread pool (one per core), 1.1 s instead of 2.0 s per pass at 1e7 x 17 on 2 cores.
        for file, groups in self._pieces():
            with readable(file) as source, pq.ParquetFile(source, pre_buffer=False, memory_map=False) as handle:
                yield from handle.iter_batches(batch_size=self.block_rows, columns=columns or list(self.columns),
                                               row_groups=groups, use_threads=True)

    def column_blocks(self, name: str) -> Iterator[np.ndarray]:
        """One column of the stored table (the weights, the clusters; text stays text), in the blocks
        blocks() reads: the same row groups, the same batch size."""
        for batch in self._batches([name]):
            yield batch.column(0).to_numpy(zero_copy_only=False)

    def _float64(self, name: str, column: pa.Array) -> np.ndarray:
        if name in self.levels:  # a string column: the index of each value in its levels
            column = pc.index_in(column, value_set=pa.array(self.levels[name], type=column.type))
        return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


_END = object()


def prefetched(items: Callable[[], Iterator], depth: int = 1) -> Iterator:
    """items() iterated on a thread of its own, up to `depth` items ahead of the caller: a pass
    decodes the next block (pyarrow, GIL released) while numpy works on this one (measured at
    1e7 x 17 on 2 cores: a statistics-and-Gram pass 2.2 s -> 1.4 s). Errors are raised in the
    caller; a caller that stops early stops the thread (the generator's close)."""
    channel: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def send(item) -> bool:
        while not stop.is_set():
            try:
                channel.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items():
                if not send(item):
                    return
            send(_END)
        except BaseException as error:  # noqa: BLE001 - handed to the caller, raised there
            send(_Failed(error))

    worker = threading.Thread(target=produce, name="linreg-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item = channel.get()
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        stop.set()
        worker.join()


def _maybe_folder(path: str) -> bool:
    """Whether a stored table's path may be a folder of parts: it is not a plain local file."""
    return is_url(path) or not Path(path).is_file()


# What a Design reads: rows, columns (target first), stats and blocks().
Table = ArrayTable | ParquetTable
