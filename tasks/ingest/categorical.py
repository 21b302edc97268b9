"""The columns of a formula model (tasks/kernels/formula.py) as the ingest pass meets them: which
ones the formula reads, which hold text (kept as text in the stored Parquet), the levels of every
categorical one gathered over the whole table, and the rows left out with --missing drop.

Flows in: the formula, the input's header, a sample of rows, then each block's raw columns.
Flows out: the model's columns (target first), its text columns, and a FormulaModel whose levels
are the whole table's, sorted (numbers as numbers, text as text), never one block's.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from tasks.config import ModelSpec
from tasks.errors import UserInputError
from tasks.ingest.columns import looks_numeric
from tasks.ingest.load import Input
from tasks.kernels.formula import FormulaError, FormulaModel, formula_variables
from tasks.wording import counted


def formula_columns(source: Input, spec: ModelSpec, block_rows: int) -> tuple[tuple[str, ...], tuple[str, ...],
                                                                               tuple[str, ...], str]:
    """(target and the columns the formula reads, those of them held as text, those used as
    categorical, the selection's log line); UserInputError naming what the formula gets wrong."""
    header = source.header
    sample = source.sample(block_rows)
    text = tuple(name for name in header if not looks_numeric(sample[name]))
    typed = sample.copy()
    for name in header:
        if name not in text:
            typed[name] = pd.to_numeric(typed[name], errors="coerce")
        else:
            typed[name] = typed[name].astype(object)
    try:
        target, variables, categorical = formula_variables(spec.formula, header, typed)
    except FormulaError as exc:
        raise UserInputError(f"option --formula {spec.formula!r}: {exc}") from None
    if target in text:
        raise UserInputError(f"{source.source}: target column {target!r} is not numeric")
    strings = tuple(v for v in variables if v in text)
    note = (f"formula {spec.formula}: columns {', '.join(variables)}"
            + (f"; categorical: {', '.join(categorical)}" if categorical else ""))
    return (target, *variables), strings, categorical, note


def carried_columns(source: Input, columns: tuple[str, ...], extra: Mapping[str, str], block_rows: int,
                    text: tuple[str, ...] = (), weights: str | None = None) -> dict[str, bool]:
    """The columns to carry beside the model's (those of extra, column -> the option naming it, that it
    does not use already) -> whether each is held as text; UserInputError naming one that is not
    there, or a weights column (`weights`, --weights) that is not numbers. text: the model's own
    columns held as text."""
    for name, option in extra.items():
        if name not in source.header:
            raise UserInputError(f"option {option}: column {name!r} not found (columns: {', '.join(source.header)})")
    names = [name for name in extra if name not in columns]
    sample = source.sample(block_rows) if names else None  # read once, and only when there is one
    carried = {name: not looks_numeric(sample[name]) for name in names}
    if weights is not None and (carried.get(weights) or weights in text):
        raise UserInputError(f"option {extra[weights]}: column {weights!r} is not numeric; weights must be numbers > 0")
    return carried


class Levels:
    """The distinct values of the categorical columns over a pass, at most max_levels each."""

    def __init__(self, names: tuple[str, ...], max_levels: int, source: str) -> None:
        self.seen = {name: set() for name in names}
        self.max_levels, self.source = max_levels, source

    def add(self, name: str, values: np.ndarray) -> None:
        self.seen[name].update(pd.unique(values[pd.notna(values)]).tolist())
        self._check(name)

    def _check(self, name: str) -> None:
        seen = self.seen[name]
        if len(seen) > self.max_levels:
            raise UserInputError(f"{self.source}: column {name!r} has more than {self.max_levels} levels "
                                 f"({len(seen)} so far); a categorical term needs at most --max-levels "
                                 f"{self.max_levels} (raise it, or leave the column out of C())")

    def merge(self, seen: dict[str, set]) -> None:
        """Add the levels another part of the table has seen (its `seen`)."""
        for name, values in seen.items():
            self.seen[name].update(values)

    def check(self) -> None:
        """UserInputError when a column has more than max_levels levels."""
        for name in self.seen:
            self._check(name)

    def sorted(self) -> dict[str, tuple]:
        """Each column's levels in sorted order; whole numbers as ints (C(year) names C(year)[T.2024])."""
        out = {}
        for name, seen in self.seen.items():
            levels = sorted(seen)
            if levels and all(isinstance(v, float) and v.is_integer() for v in levels):
                levels = [int(v) for v in levels]
            out[name] = tuple(levels)
        return out


def model_of(spec: ModelSpec, columns: tuple[str, ...], strings: tuple[str, ...], levels: Levels) -> FormulaModel:
    """The formula model with the whole table's levels."""
    return FormulaModel(spec.formula, columns[0], columns[1:], strings, levels.sorted())


def dropped_note(dropped: int, kept: int) -> str:
    return f"--missing drop: left out {counted(dropped, 'row')} with a missing value ({counted(kept, 'row')} kept)"
