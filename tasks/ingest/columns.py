"""Which columns a model uses: the target and the features, chosen once from the header and a sample of
rows. By default every other numeric column, less the ones that look like row indexes (a name like
`id`, or the values 0, 1, 2, ... or 1, 2, 3, ...); each column left out is named with why."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

import numpy as np
import pandas as pd

from tasks.config import ModelSpec
from tasks.errors import UserInputError
from tasks.ingest.cells import decimal_comma_hint
from tasks.ingest.load import Input


def looks_numeric(column: pd.Series) -> bool:
    """A column counts as numeric when most of its non-missing values parse as numbers."""
    if pd.api.types.is_numeric_dtype(column):
        return True
    present = column.dropna()
    return len(present) > 0 and pd.to_numeric(present, errors="coerce").notna().mean() > 0.5


# Column names that identify rows rather than measure anything (compared lower-cased; `*_id` too).
ROW_ID_NAMES = {"id", "index", "idx", "row", "rowid", "row_id", "rownum", "row_number", "rownames", "obs",
                "unnamed: 0", ""}
# A column counts the rows when its first ROW_COUNT_MIN values (at least) are 0, 1, 2, ... or 1, 2, 3,
# ...: below that, a short table's x = 1, 2, 3 is more likely a measurement than an index.
ROW_COUNT_MIN = 20


def _row_index(name: str, column: pd.Series) -> str | None:
    """Why a numeric column looks like a row index (named like one, or 0, 1, 2, ... or 1, 2, 3, ...
    row by row), or None."""
    key = name.strip().lower()
    if key in ROW_ID_NAMES or key.endswith("_id"):
        return "named like a row identifier"
    values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    if len(values) >= ROW_COUNT_MIN and values[0] in (0.0, 1.0) and np.array_equal(values, values[0] + np.arange(len(values))):
        return f"it counts the rows: {values[0]:.0f}, {values[0] + 1:.0f}, {values[0] + 2:.0f}, ..."
    return None


def default_features(columns: tuple[str, ...], sample: pd.DataFrame, target: str,
                     carried: Mapping[str, str] | None = None) -> tuple[tuple[str, ...], dict]:
    """Every numeric column but the target, row indexes and the columns an option uses (carried,
    column -> the option: the weights, the clusters), told apart on a sample of rows; and the
    columns left out -> why."""
    features, left_out = [], {}
    for name in columns:
        if name == target:
            continue
        if name in (carried or {}):
            left_out[name] = f"used by {carried[name]}"
            continue
        if not looks_numeric(sample[name]):
            present = sample[name].dropna()
            left_out[name] = "not numeric" + (decimal_comma_hint(present.iloc[0]) if len(present) else "")
        elif (why := _row_index(name, sample[name])) is not None:
            left_out[name] = f"looks like a row index: {why}"
        else:
            features.append(name)
    return tuple(features), left_out


def selection_note(features: tuple[str, ...], left_out: dict, given: bool) -> str:
    """The log line that says which columns the model uses, and which it leaves out and why."""
    if given:
        return f"features: {', '.join(features)} (--features)"
    note = f"features: {', '.join(features)} (every numeric column but the target)"
    if left_out:
        note += ("; left out: " + ", ".join(f"{name!r} ({why})" for name, why in left_out.items())
                 + "; name columns with --features to choose them yourself")
    return note


def select_columns(source: Input, spec: ModelSpec, block_rows: int,
                   carried: Mapping[str, str] | None = None) -> tuple[tuple[str, ...], str]:
    """Return (target, *features) after checking that they exist and are unique, and the selection
    note. Without --features, the numeric columns (less row indexes, and the columns carried for an
    option: carried, column -> the option) are told apart on the first block of rows."""
    src, columns = source.source, source.header
    dupes = sorted(name for name, count in Counter(columns).items() if count > 1)
    if dupes:
        raise UserInputError(f"{src}: duplicate column name(s) {', '.join(map(repr, dupes))}")
    available = ", ".join(columns)
    if spec.target not in columns:
        raise UserInputError(f"{src}: target column {spec.target!r} not found (columns: {available})")
    left_out: dict = {}
    if spec.features is None:
        features, left_out = default_features(columns, source.sample(block_rows), spec.target, carried or {})
        if not features:
            why = "".join(f"; {name!r} {reason}" for name, reason in left_out.items()
                          if not reason.startswith("not numeric") or "--decimal" in reason)
            index = any(reason.startswith("looks like a row index") for reason in left_out.values())
            raise UserInputError(f"{src}: no numeric feature column besides target {spec.target!r}{why}"
                                 + ("; name a column with --features to use it" if index else ""))
    else:
        features = spec.features
        for name in features:
            if name not in columns:
                raise UserInputError(f"{src}: feature column {name!r} not found (columns: {available})")
        if spec.target in features:
            raise UserInputError(f"option --features: target column {spec.target!r} is also a feature")
        repeated = sorted(n for n, c in Counter(features).items() if c > 1)
        if repeated:
            raise UserInputError(f"option --features: column(s) {', '.join(map(repr, repeated))} named twice")
    if spec.degree > 1 and len(features) != 1:
        raise UserInputError(
            f"option --degree {spec.degree}: a polynomial needs exactly one feature, "
            f"got {len(features)} ({', '.join(features)})"
        )
    return (spec.target, *features), selection_note(features, left_out, spec.features is not None)
