"""The cells of each block as the ingest pass streams it: every value present, numeric and finite
(coerced to float64), or text for a formula's text columns; missing cells counted over the whole pass
(one message names them all), or their rows left out with --missing drop."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd
import pyarrow as pa

from tasks.errors import UserInputError
from tasks.ingest.load import Column, RawBlock
from tasks.wording import counted

# where(row) -> (file, "row 3 (line 4)"): the file that holds a row (0-based over the input), and the row in it.
Where = Callable[[int], tuple[str, str]]


def decimal_comma_hint(value: object) -> str:
    """A hint when a value that is not a number reads as one with a decimal comma ('130,7')."""
    text = str(value).strip()
    if "," in text and "." not in text:
        try:
            float(text.replace(",", "."))
        except ValueError:
            return ""
        return f" ({text!r} reads as a number with --decimal ,)"
    return ""


def _float64(column: Column) -> tuple[np.ndarray, pd.Series | None]:
    """(values (m,) float64, NaN where missing or not a number; the text values, or None when the
    column was numeric)."""
    if isinstance(column, pa.Array):
        kind = column.type
        if column.null_count == 0 and (pa.types.is_floating(kind) or pa.types.is_integer(kind)):
            return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64), None
        column = column.to_pandas()
    if pd.api.types.is_numeric_dtype(column):  # bool too: False, True are 0, 1
        return column.to_numpy(dtype=np.float64, na_value=np.nan), None
    return pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan), column


class MissingCells:
    """Missing cells over a whole pass, per column: how many, and where the first one is; so that one
    message names them all instead of one run per blank cell."""

    def __init__(self, columns: tuple[str, ...]) -> None:
        self.columns, self.count, self.first = columns, [0] * len(columns), [None] * len(columns)

    def add(self, j: int, mask: np.ndarray, first_row: int, where: Where) -> None:
        """Column j's missing cells of a block whose first row is first_row (mask (m,))."""
        n = int(mask.sum())
        if n and self.first[j] is None:
            self.first[j] = where(first_row + int(np.argmax(mask)))
        self.count[j] += n

    def check(self) -> None:
        """UserInputError naming every column with missing cells, if any."""
        found = [(name, n, first) for name, n, first in zip(self.columns, self.count, self.first) if n]
        if not found:
            return
        if len(found) == 1 and found[0][1] == 1:  # one blank cell: the message of any other bad value
            name, _, (file, at) = found[0]
            raise UserInputError(f"{file}: column {name!r}, {at}: missing value")
        total = sum(n for _, n, _ in found)
        each = "; ".join(f"column {name!r}: {counted(n, 'missing value')}, the first in {file}, {at}"
                         for name, n, (file, at) in found)
        raise UserInputError(f"{total} missing values in {counted(len(found), 'column')}: {each}; fill them, "
                             "or leave those rows out of the table")


def text_values(column: Column) -> tuple[np.ndarray, np.ndarray]:
    """A text column of a block as (m,) Python strings (None where missing) and its missing mask."""
    series = column.to_pandas() if isinstance(column, (pa.Array, pa.ChunkedArray)) else column
    missing = series.isna().to_numpy()
    values = np.array([None if gone else str(v) for v, gone in zip(series.tolist(), missing)], dtype=object)
    return values, missing


def check_block(block: RawBlock, columns: tuple[str, ...], where: Where, missing: MissingCells | None = None,
                text: frozenset[int] = frozenset(), drop: bool = False) -> list[np.ndarray]:
    """The block's columns as float64 (m,) arrays (the columns `text` as Python strings); every value
    must be present, numeric and finite.

    The first bad value (lowest row, then the first column in model order) is named with its file,
    column and row. With `missing`, missing cells are counted there instead (MissingCells.check
    names them all after the pass); a value that is not a number or not finite still stops here.
    drop: rows with a missing cell (NaN included) are left out of the columns returned.
    """
    values, first, gone = [], None, []
    for j, column in enumerate(block.columns):
        if j in text:
            v, blank = text_values(column)
            values.append(v)
            if drop:
                gone.append(blank)
            elif missing is not None and blank.any():
                missing.add(j, blank, block.first_row, where)
            continue
        v, text_column = _float64(column)
        values.append(v)
        bad = ~np.isfinite(v)
        if bad.any() and (drop or missing is not None):
            blank = np.isnan(v) if text_column is None else (np.isnan(v) & text_column.isna().to_numpy())
            if drop:
                gone.append(blank)
            else:
                missing.add(j, blank, block.first_row, where)
            bad &= ~blank
        if bad.any():
            i = int(np.argmax(bad))
            if first is None or i < first[0]:
                first = (i, j, text_column)
    if first is None and gone:
        keep = ~np.logical_or.reduce(gone)
        return values if keep.all() else [v[keep] for v in values]
    if first is None:
        return values
    i, j, text = first
    file, at = where(block.first_row + i)
    place = f"{file}: column {columns[j]!r}, {at}"
    value = float(values[j][i])
    if not math.isnan(value):
        raise UserInputError(f"{place}: value {value!r} is not finite")
    if text is not None and not pd.isna(text.iloc[i]):
        raise UserInputError(f"{place}: value {text.iloc[i]!r} is not a number{decimal_comma_hint(text.iloc[i])}")
    raise UserInputError(f"{place}: missing value")


