"""Prepare the data: load -> validate -> store in ONE streamed pass over the input.

Each block of rows is read (tasks/ingest/load.py), checked and coerced to float64, folded into the column
statistics (tasks/ingest/validate.py), hashed and appended to the stored Parquet (tasks/ingest/store.py); memory
stays bounded by a block. The checks that need the whole table then run on the statistics and on one
pass over the written file (the design's geometry, which the exact fit and training reuse), before
the stored file gets its name. Bad input: UserInputError, and nothing new under the data folder.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from prefect import task

from tasks.config import ModelSpec
from tasks.errors import UserInputError, retry_unless_user_error
from tasks.ingest.categorical import carried_columns, dropped_note, formula_columns, model_of
from tasks.ingest.columns import select_columns
from tasks.ingest.fold import STAGES, Clock, Fold, Kinds
from tasks.ingest.load import Input, open_input
from tasks.ingest.parts import PartsStaging, ingest_parts, parted_ingest
from tasks.ingest.store import StagedParquet, stored_copy, stored_file
from tasks.ingest.validate import check_design, check_magnitudes, find_first
from tasks.kernels.design import Design, scaled_basis
from tasks.kernels.formula import FormulaModel
from tasks.kernels.passes import LOCAL, Passes
from tasks.kernels.table import BLOCK_ROWS, ColumnStats, ParquetTable, read_rows
from tasks.kernels.tsqr import Geometry
from tasks.kernels.weights import Weighting, weigh, whiten
from tasks.storage import Location, is_url, location

__all__ = ["STAGES", "Prepared", "prepare_data", "prepare_data_task"]


@dataclass(frozen=True)
class Prepared:
    """The validated input, stored, and what the pass learned about it.

    source: absolute path of DATA; path: absolute path of validated/<sha256>.parquet; rows;
    columns: the model's columns, target first; stats: their ColumnStats; geometry: the design's
    (computed once per run); timings: seconds the pass spent in each of STAGES; block_rows: rows
    per block and per row group of the stored file; selection: the columns' log line; intercept: the
    model's, which the geometry was computed for (it travels with it to the flow); formula: a formula
    model with the table's levels, term_stats its term columns' statistics; dropped: rows left out
    by --missing drop.
    """

    source: str
    path: str
    sha256: str
    rows: int
    columns: tuple[str, ...]
    stats: ColumnStats
    geometry: Geometry
    timings: Mapping[str, float]
    block_rows: int = BLOCK_ROWS
    selection: str = ""  # which columns the model uses, which it left out and why (a log line)
    intercept: bool = True  # the model's, which the geometry was computed for
    formula: FormulaModel | None = None
    term_stats: ColumnStats | None = None
    dropped: int = 0
    extra: tuple[str, ...] = ()  # columns stored beside the model's (weights, the clusters of --cov cluster:COL)
    weighting: Weighting | None = None  # the weighting pass's (--weights): geometry is then the whitened design's
    parts: int = 1  # the parts the pass read, checked and stored apart (--dask: on the cluster's workers)

    def table(self) -> ParquetTable:
        levels = self.formula.text_levels if self.formula else {}
        return ParquetTable(self.path, self.columns, self.rows, self.stats, _read_rows(self.block_rows, self.columns,
                                                                                       self.formula), levels=levels)

    def design(self, spec: ModelSpec) -> Design:
        """The model's design over the stored file (read block by block, never whole)."""
        return Design(self.table(), self.columns[1:], self.columns[0], spec.degree, self.intercept, self.formula,
                      self.term_stats)

    def fitted(self, spec: ModelSpec) -> Design:
        """The design the fits run on: the model's, or its whitened rows with --weights (kernels/weights.py)."""
        design = self.design(spec)
        return whiten(design, self.weighting) if self.weighting is not None else design

    def to_json(self) -> dict:
        """A JSON-able dict that from_json turns back into an equal Prepared (floats round-trip exactly)."""
        g = self.geometry
        return {
            "source": self.source, "path": self.path, "sha256": self.sha256, "rows": self.rows,
            "columns": list(self.columns), "stats": self.stats.to_json(), "block_rows": self.block_rows,
            "timings": {k: float(v) for k, v in self.timings.items()}, "selection": self.selection,
            "formula": self.formula.to_json() if self.formula else None, "dropped": self.dropped,
            "extra": list(self.extra), "weighting": self.weighting.to_json() if self.weighting else None,
            "term_stats": self.term_stats.to_json() if self.term_stats is not None else None, "parts": self.parts,
            # The basis (exact rationals) is rebuilt from the stats; its model is degree and intercept.
            "geometry": {"degree": g.basis.degree, "intercept": self.intercept, "R": g.R.tolist(),
                         "qty": g.qty.tolist(), "terms": g.terms.to_json(), "y": g.y.to_json()},
        }

    @classmethod
    def from_json(cls, doc: Mapping) -> Prepared:
        columns, stats, g = tuple(doc["columns"]), ColumnStats.from_json(doc["stats"]), doc["geometry"]
        formula = FormulaModel.from_json(doc["formula"]) if doc.get("formula") else None
        term_stats = ColumnStats.from_json(doc["term_stats"]) if doc.get("term_stats") else None
        levels = formula.text_levels if formula else {}
        table = ParquetTable(doc["path"], columns, int(doc["rows"]), stats,
                             _read_rows(int(doc["block_rows"]), columns, formula), levels=levels)
        design = Design(table, columns[1:], columns[0], int(g["degree"]), bool(g["intercept"]), formula, term_stats)
        weighting = Weighting.from_json(doc["weighting"]) if doc.get("weighting") else None
        fitted = whiten(design, weighting) if weighting else design
        geometry = Geometry(scaled_basis(fitted), np.array(g["R"], dtype=np.float64),
                            np.array(g["qty"], dtype=np.float64), ColumnStats.from_json(g["terms"]),
                            ColumnStats.from_json(g["y"]))
        return cls(doc["source"], table.path, doc["sha256"], table.rows, columns, stats, geometry,
                   dict(doc["timings"]), int(doc["block_rows"]), doc.get("selection", ""), design.intercept, formula,
                   term_stats, int(doc.get("dropped", 0)), tuple(doc.get("extra", ())), weighting,
                   int(doc.get("parts", 1)))


def _read_rows(block_rows: int, columns: tuple[str, ...], formula: FormulaModel | None) -> int:
    """Rows per block of the passes over the stored file (its row groups stay block_rows): fewer
    for a formula of many terms (kernels/table.read_rows)."""
    return read_rows(block_rows, len(formula.term_names) if formula else len(columns) - 1)


def prepare_data(spec: ModelSpec, data: Location, data_dir: Location, block_rows: int = BLOCK_ROWS,
                 decimal: str = ".", extra: Mapping[str, str] | None = None, passes: Passes = LOCAL) -> Prepared:
    """Read, validate and store DATA for the model in one pass; raise UserInputError on bad input.
    decimal: a CSV's decimal mark; extra: columns the run needs beside the model's (the clusters of
    --cov cluster:COL) -> the option that names each, checked and stored with them, as the model's
    weights (--weights) are; passes: with more than one part (--dask), a Parquet table is read,
    checked and stored part by part where passes.map runs them (tasks/ingest/parts.py)."""
    extra = ({spec.weights: f"--weights {spec.weights}"} if spec.weights else {}) | dict(extra or {})
    clock = Clock()
    with clock("load"):
        source = open_input(data, decimal)
    with clock("validate"):
        if spec.formula is None:
            (columns, note), strings, categorical = select_columns(source, spec, block_rows, extra), (), ()
        else:
            columns, strings, categorical, note = formula_columns(source, spec, block_rows)
        carried = carried_columns(source, columns, extra, block_rows, strings, spec.weights)
    kinds = Kinds(strings, categorical, tuple(carried), tuple(name for name, text in carried.items() if text))
    # The input may be this data folder's stored copy itself: then hash it, but do not copy it.
    data_dir = location(data_dir)
    claimed = stored_copy(source.metadata, columns + kinds.extra, data_dir)
    prepared = _pass(spec, source, columns, data_dir, block_rows, clock, claimed, kinds, passes)
    if prepared is None:  # its rows do not hash to the name it claims: store it like any input
        prepared = _pass(spec, source, columns, data_dir, block_rows, clock, None, kinds, passes)
    if prepared.dropped:
        note += "; " + dropped_note(prepared.dropped, prepared.rows)
    if prepared.parts > 1:
        note += f"; read, checked and stored in {prepared.parts} parts on the Dask cluster's workers"
    return dataclasses.replace(prepared, selection=note)


def _pass(spec: ModelSpec, source: Input, columns: tuple[str, ...], data_dir: Path, block_rows: int,
          clock: Clock, claimed: str | None, kinds: Kinds, passes: Passes = LOCAL) -> Prepared | None:
    """The streamed pass; with `claimed`, the sha256 the stored copy should have (None if it has not).
    passes: with more than one part, a Parquet input is read, checked and stored part by part where
    passes.map runs them (the workers of a Dask cluster: tasks/ingest/parts.py)."""
    if claimed is None and passes.parts > 1 and parted_ingest(source):
        with PartsStaging(data_dir, columns + kinds.extra, block_rows) as staged:
            fold, parts = ingest_parts(Fold(spec, source, columns, kinds, parted=True), staged, passes, clock)
            prepared = _finish(fold, staged, data_dir, block_rows, clock, claimed, passes)
            return dataclasses.replace(prepared, parts=parts)
    fold = Fold(spec, source, columns, kinds)
    with StagedParquet(data_dir, fold.stored, block_rows, fold.text) if claimed is None else _no_write() as staged:
        fold.add_all(source.blocks(fold.stored, block_rows), staged, clock)
        return _finish(fold, staged, data_dir, block_rows, clock, claimed)


def _finish(fold: Fold, staged: StagedParquet | PartsStaging | None, data_dir: Path, block_rows: int, clock: Clock,
            claimed: str | None, passes: Passes = LOCAL) -> Prepared | None:
    """The checks that need the whole table, on the fold and on passes over the written rows (their
    parts where passes runs them: the stored parts are where the workers read them); then the stored
    table gets its name."""
    spec, source, columns, kinds = fold.spec, fold.source, fold.columns, fold.kinds
    stored, missing, levels, stats, gram, distinct, dropped = (fold.stored, fold.missing, fold.levels, fold.stats,
                                                               fold.gram, fold.distinct, fold.dropped)
    missing.check()
    levels.check()
    sha = fold.digest.hexdigest()
    if claimed is not None and sha != claimed:
        return None
    with clock("store"):
        if staged is not None:
            staged.finish(source.source, sha, stats.count)
    model = model_of(spec, columns, kinds.strings, levels) if spec.formula else None
    path = staged.path if staged else str(stored_file(data_dir, sha))
    if spec.weights:
        _check_weights(stats, stored, spec.weights, path, block_rows, source)
    stats = stats.column(slice(0, len(columns)))  # the model's columns'
    table = ParquetTable(path, columns, stats.count, stats, _read_rows(block_rows, columns, model),
                         levels=model.text_levels if model else {})
    with clock("validate"):
        check_magnitudes(stats, columns, spec.degree, source.source, partial(find_first, table), source.where)
        design = Design(table, columns[1:], columns[0], spec.degree,
                        model.intercept if model else spec.intercept, model)
        if model is not None and stats.count:  # the basis needs the term columns' statistics: a pass
            with np.errstate(over="ignore", invalid="ignore"):  # terms beyond the limits: refused below
                design = dataclasses.replace(design, term_stats=_terms_stats(design, passes))
            # The same float64 limits for the terms a formula computes (I(x ** 9), x:z) as for columns.
            terms = _TermTable(design)
            check_magnitudes(terms.stats, terms.columns, 1, source.source, partial(find_first, terms), source.where)
        weighting, fitted = None, None
        if spec.weights and stats.count > design.n_params:
            weighting = weigh(design, spec.weights, passes)
            fitted = whiten(design, weighting)
            # s y and s x: the same float64 limits as the raw values (weights of 1e300 are not)
            check_magnitudes(weighting.stats, fitted.table.columns, 1, source.source,
                             partial(find_first, fitted.table), source.where)
        geometry = check_design(design, source.source, distinct.count, fitted, gram, passes)
    with clock("store"):
        path = staged.publish(sha) if staged is not None else \
            table.path if is_url(table.path) else str(Path(table.path).resolve())
    return Prepared(source.source, path, sha, stats.count, columns, stats, geometry, clock.seconds, block_rows,
                    intercept=design.intercept, formula=model, term_stats=design.term_stats, dropped=dropped,
                    extra=kinds.extra, weighting=weighting)


def _terms_stats(design: Design, passes: Passes) -> ColumnStats:
    """A formula's term columns' statistics: one pass, part by part where passes runs them."""
    merged = ColumnStats.empty(len(design.term_names))
    for stats in passes.over(_part_terms_stats, design):
        merged = merged.merge(stats)
    return merged


def _part_terms_stats(part: Design) -> ColumnStats:
    with np.errstate(over="ignore", invalid="ignore"):  # terms beyond the limits: refused after the pass
        return part.terms_stats()


class _TermTable:
    """A formula design's target and term columns as a table (blocks computed again from the stored
    file), for the magnitude checks and the row they name."""

    def __init__(self, design: Design) -> None:
        self.design, self.columns = design, (design.target, *design.term_names)
        y, t = design.stats.column(0), design.term_stats
        self.stats = ColumnStats(y.count, *(np.concatenate([getattr(y, k), getattr(t, k)])
                                            for k in ("mean", "m2", "min", "max")))

    def blocks(self) -> Iterator[np.ndarray]:
        for features, y in self.design.blocks():
            yield np.column_stack([y, self.design.terms_of(features)])


def _check_weights(stats: ColumnStats, stored: tuple[str, ...], column: str, path: str, block_rows: int,
                   source: Input) -> None:
    """Weights finite (the cell checks) and > 0: UserInputError naming the first row with one that is not."""
    j = stored.index(column)
    if not stats.count or stats.min[j] > 0:
        return
    table = ParquetTable(path, (column,), stats.count, stats.column(j), block_rows)
    row, value = find_first(table, 0, lambda v: ~(v > 0))
    file, at = source.where(row)
    raise UserInputError(f"{file}: column {column!r}, {at}: weight {value!r} is not > 0 "
                         f"(option --weights {column}: weights must be finite and > 0)")


@contextmanager
def _no_write() -> Iterator[None]:
    yield None


@task(name="prepare-data", retries=2, retry_delay_seconds=2, retry_condition_fn=retry_unless_user_error)
def prepare_data_task(spec: ModelSpec, data: str, data_dir: str, decimal: str = ".",
                      extra: Mapping[str, str] | None = None) -> Prepared:
    """Load, validate and store the input in one streamed pass."""
    return prepare_data(spec, location(data), location(data_dir), decimal=decimal, extra=extra)
