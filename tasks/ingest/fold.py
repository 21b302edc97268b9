"""What the streamed ingest pass gathers from the blocks it reads (tasks/ingest/prepare.py), and the
seconds it spends per stage. A part of the table read on a worker folds its rows the same way, and
the parts' folds merge in row order (tasks/ingest/parts.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from tasks.config import ModelSpec
from tasks.ingest.categorical import Levels
from tasks.ingest.cells import MissingCells, check_block
from tasks.ingest.load import Input, RawBlock
from tasks.ingest.store import ContentHash
from tasks.ingest.validate import DistinctValues
from tasks.kernels.gram import GramSums
from tasks.kernels.table import ColumnStats

if TYPE_CHECKING:
    from tasks.ingest.parts import PartResult

STAGES = ("load", "validate", "store")


class Clock:
    """Seconds spent per stage, accumulated over the blocks of the pass."""

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(STAGES, 0.0)

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - start


@dataclass(frozen=True)
class Kinds:
    """A formula's columns held as text, and those used as categorical (empty without a formula); the
    columns carried beside the model's, and those of them held as text."""

    strings: tuple[str, ...]
    categorical: tuple[str, ...]
    extra: tuple[str, ...] = ()
    extra_text: tuple[str, ...] = ()


class Writer(Protocol):
    """Where a fold's checked rows go: one (m,) array per stored column (store.StagedParquet, a part's file)."""

    def write(self, values: list[np.ndarray]) -> None: ...


class Fold:
    """The column statistics, the content hash, the missing cells, the categorical levels, the distinct
    x (--degree), the Gram sums and the rows left out, of the blocks added so far; each block is also
    handed to the stored table's writer. parted: the hash keeps its chunks' digests (a part's)."""

    def __init__(self, spec: ModelSpec, source: Input, columns: tuple[str, ...], kinds: Kinds,
                 parted: bool = False) -> None:
        self.spec, self.source, self.columns, self.kinds = spec, source, columns, kinds
        self.stored = columns + kinds.extra  # the model's columns, then the ones carried beside them
        self.text = tuple(j for j, name in enumerate(self.stored) if name in kinds.strings + kinds.extra_text)
        self.stats, self.digest = ColumnStats.empty(len(self.stored)), ContentHash(self.stored, self.text, parted)
        self.distinct = DistinctValues(spec.degree + int(spec.intercept))
        self.missing = MissingCells(self.stored)
        self.levels = Levels(kinds.categorical, spec.max_levels, source.source)
        # The Gram sums of straight-line columns, from which the geometry may come without a pass of its own
        self.gram = GramSums(len(columns)) if spec.formula is None and spec.degree == 1 and not spec.weights else None
        self.dropped = 0

    def add_all(self, blocks: Iterator[RawBlock], staged: Writer | None, clock: Clock) -> None:
        """Read (timed as the load stage), check and fold every block; UserInputError at the first bad value."""
        while True:
            with clock("load"):
                raw = next(blocks, None)
            if raw is None:
                return
            if raw.rows:
                self.add(raw, staged, clock)

    def add(self, raw: RawBlock, staged: Writer | None, clock: Clock) -> None:
        """Check one block of rows and fold it in (UserInputError at its first bad value)."""
        columns, text = self.columns, self.text
        with clock("validate"):
            values = check_block(raw, self.stored, self.source.where, self.missing, frozenset(text),
                                 self.spec.missing == "drop")
            self.dropped += raw.rows - len(values[0])
            if any(self.missing.count) or not len(values[0]):
                return  # the pass only counts the missing cells now; it fails after them
            for name in self.kinds.categorical:
                self.levels.add(name, values[columns.index(name)])
            # (k, m): its transpose is the (m, k) block, column-major; 0.0 stands in for text
            rows_t = np.array([np.zeros(len(v)) if j in text else v for j, v in enumerate(values)])
            with np.errstate(over="ignore"):  # squares of values beyond magnitude_limit: refused below
                self.stats = self.stats.merge(ColumnStats.of(rows_t.T))
            if self.spec.degree > 1:
                self.distinct.add(values[1])
            if self.gram is not None:
                self.gram.update(rows_t[:len(columns)].T)
        with clock("store"):
            self.digest.update(rows_t.T, {j: values[j] for j in text})
            if staged is not None:
                staged.write(values)

    def merge(self, part: PartResult) -> None:
        """Add what a part of the table that follows these rows gathered (its chunk digests aside:
        parts.ingest_parts adds those)."""
        self.stats = self.stats.merge(part.stats)
        count, first = part.missing
        self.missing.count = [a + b for a, b in zip(self.missing.count, count)]
        self.missing.first = [a if a is not None else b for a, b in zip(self.missing.first, first)]
        self.levels.merge(part.levels)
        self.distinct.seen.update(part.distinct)
        if self.gram is not None:
            self.gram.merge(part.gram)
        self.dropped += part.dropped
