"""Validate step: the table can be fitted (columns exist, numbers are finite, the design has full rank)."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pandera.pandas as pa
from prefect import task

from tasks.config import ModelSpec
from tasks.kernels.design import Design
from tasks.kernels.tsqr import design_geometry
from tasks.errors import UserInputError
from tasks.load import LoadedTable


@dataclass(frozen=True)
class ValidatedData:
    """The columns the model uses, as float64, plus the design built from them.

    frame: (n_rows, 1 + n_features) with the target first; source: where it came from.
    """

    frame: pd.DataFrame
    design: Design
    source: str


def _where(table: LoadedTable, row: int) -> str:
    """'row 3 (line 4)' for CSV files, 'row 3' otherwise; rows count from 1 after the header."""
    if table.line_offset is not None:
        return f"row {row + 1} (line {row + table.line_offset})"
    return f"row {row + 1}"


def _looks_numeric(column: pd.Series) -> bool:
    """A column counts as numeric when most of its non-missing values parse as numbers."""
    if pd.api.types.is_numeric_dtype(column):
        return True
    present = column.dropna()
    return len(present) > 0 and pd.to_numeric(present, errors="coerce").notna().mean() > 0.5


def select_columns(table: LoadedTable, spec: ModelSpec) -> tuple[str, ...]:
    """Return (target, *features) after checking that they exist and are unique."""
    src = table.source
    dupes = sorted(name for name, count in Counter(table.header).items() if count > 1)
    if dupes:
        raise UserInputError(f"{src}: duplicate column name(s) {', '.join(map(repr, dupes))}")
    columns = list(table.frame.columns)
    available = ", ".join(map(str, columns))
    if spec.target not in columns:
        raise UserInputError(f"{src}: target column {spec.target!r} not found (columns: {available})")
    if spec.features is None:
        features = tuple(
            c for c in columns if c != spec.target and _looks_numeric(table.frame[c])
        )
        if not features:
            raise UserInputError(f"{src}: no numeric feature column besides target {spec.target!r}")
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
    return (spec.target, *features)


def _finite(series: pd.Series) -> pd.Series:
    return pd.Series(np.isfinite(series.to_numpy(dtype=float)), index=series.index)


def check_values(table: LoadedTable, columns: tuple[str, ...]) -> pd.DataFrame:
    """Coerce the columns to float64; every value must be present, numeric and finite."""
    schema = pa.DataFrameSchema(
        {c: pa.Column(float, coerce=True, nullable=False, checks=pa.Check(_finite, error="finite"))
         for c in columns},
        strict=False,
    )
    frame = table.frame.loc[:, list(columns)].reset_index(drop=True)
    try:
        return schema.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as exc:
        raise UserInputError(_first_failure(table, exc.failure_cases)) from None


def _first_failure(table: LoadedTable, cases: pd.DataFrame) -> str:
    cases = cases[cases["index"].notna()].copy()
    cases["index"] = cases["index"].astype(int)
    first = cases.sort_values(["index"], kind="stable").iloc[0]
    row, column, value = int(first["index"]), first["column"], first["failure_case"]
    where = f"{table.source}: column {column!r}, {_where(table, row)}"
    if first["check"] == "not_nullable" or (isinstance(value, float) and np.isnan(value)):
        return f"{where}: missing value"
    if first["check"] == "finite":
        return f"{where}: value {value!r} is not finite"
    return f"{where}: value {value!r} is not a number"


def magnitude_limit(n: int) -> float:
    """B: the largest |value| a term (x^k) or the target may take in an n-row fit.

    Every sum the fit forms runs over n rows of values centered by a mean (|v - mean| <= 2B):
    norms, RSS, TSS, X^T r, the torch MSE. B = sqrt(MAX / (2^10 n)) makes n (2B)^2 = MAX / 2^8,
    so none overflows, with room for the loss of an untrained model; Dekker's split
    (2^27 + 1) v in the double-double arithmetic stays finite too (B < 1e153). The same bound
    from below: a column whose largest |value| is at least 1/B has squares of at least
    2^10 n / MAX, normal numbers, so its norm cannot underflow to 0.
    """
    return math.sqrt(np.finfo(np.float64).max / (2**10 * n))


def _log2_max(values: np.ndarray) -> float:
    """log2 of the largest |value| (-inf for an all-zero column), free of overflow and underflow."""
    largest = float(np.abs(values).max())
    return math.log2(largest) if largest > 0 else -math.inf


def _decades(log2: float) -> int:
    return round(log2 * math.log10(2))


def check_magnitudes(table: LoadedTable, frame: pd.DataFrame, degree: int) -> None:
    """Refuse values the float64 arithmetic of the fit cannot hold, with B = magnitude_limit(n):

    1. every term value |x|^k (k <= degree) and every |y| at most B;
    2. every column's largest |term| at least 1/B (zero columns are left to check_design);
    3. |y| / |x^k| (largest values), the scale of x^k's coefficient b, within [1/B, B], so that
       b^2 (in its standard error) and |b|^2 (in norms) neither overflow nor underflow; with
       rules 1 and 2 alone b could reach B^2.
    frame: (n, 1 + n_features), target first.
    """
    n, src = len(frame), table.source
    if n == 0:
        return  # check_design names the missing rows
    limit = magnitude_limit(n)
    bits = math.log2(limit)
    target = frame.columns[0]
    y_bits = _log2_max(frame[target].to_numpy())
    for column in frame.columns:
        power = 1 if column == target else degree
        values = frame[column].to_numpy()
        top = _log2_max(values)
        what = f"|value|^{power} (--degree {power})" if power > 1 else "|value|"
        # |v|^power > B, compared as |v| > B^(1/power) so that the power itself cannot overflow.
        big = np.flatnonzero(np.abs(values) > 2.0 ** (bits / power))
        if big.size:
            row = int(big[0])
            raise UserInputError(
                f"{src}: column {column!r}, {_where(table, row)}: value {float(values[row])!r} is too large: "
                f"{what} must stay below {limit:.3g} for {n} rows, or sums of squares overflow "
                f"float64; rescale the column (e.g. divide it by 1e{_decades(top)})")
        # The smallest term column of |x| < 1 is the highest power.
        if min(top, power * top) < -bits:
            row = int(np.argmax(np.abs(values)))
            raise UserInputError(
                f"{src}: column {column!r}: every value is too small: the largest, {float(values[row])!r} "
                f"({_where(table, row)}), has {what} below {1 / limit:.3g}, so squares underflow "
                f"float64; rescale the column (e.g. multiply it by 1e{-_decades(top)})")
        if column == target or not (math.isfinite(top) and math.isfinite(y_bits)):
            continue
        for k in sorted({1, power}):
            ratio = y_bits - k * top  # log2 of |y| / |x^k|, the scale of x^k's coefficient
            if abs(ratio) > bits:
                term = column if k == 1 else f"{column}^{k}"
                raise UserInputError(
                    f"{src}: column {target!r} is about 1e{_decades(ratio)} times column {term!r}: "
                    f"the coefficient of {term} would be about that size, beyond float64's safe "
                    f"range for its square ({1 / limit:.3g} to {limit:.3g} for {n} rows); "
                    "rescale one of the columns")


def check_design(design: Design, source: str) -> None:
    """Enough rows, no constant predictor beside the intercept, and a design of full rank."""
    names = design.term_names
    if design.n <= design.n_params:
        params = ("intercept + " if design.intercept else "") + ", ".join(names)
        raise UserInputError(
            f"{source}: {design.n} rows, but the model has {design.n_params} parameters ({params}); "
            f"need at least {design.n_params + 1} rows"
        )
    if design.intercept:
        for j, name in enumerate(design.names):
            column = design.features[:, j]
            if np.all(column == column[0]):
                raise UserInputError(
                    f"{source}: column {name!r} is constant (every row is {column[0]!r}); "
                    "it duplicates the intercept"
                )
    if design.degree > 1:
        distinct = len(np.unique(design.features[:, 0]))
        needed = design.degree + int(design.intercept)
        if distinct < needed:
            raise UserInputError(
                f"{source}: column {design.names[0]!r} has {distinct} distinct values; "
                f"option --degree {design.degree} needs at least {needed}"
            )
    # W = QR with orthonormal Q: R has W's singular values and right singular vectors.
    s, vt = design_geometry(design).singular_values()
    # numpy.linalg.matrix_rank's tolerance, on the well-conditioned twin of the design.
    tol = s.max() * max(design.n, design.n_params) * np.finfo(float).eps
    if s.min() <= tol:
        null = vt[-1]
        params = (("intercept",) if design.intercept else ()) + names
        involved = [params[j] for j in np.flatnonzero(np.abs(null) > 1e-6 * np.abs(null).max())]
        raise UserInputError(
            f"{source}: the design is rank deficient: columns {', '.join(map(repr, involved))} "
            "are linearly dependent (exactly collinear); drop one of them"
        )


def validate_table(table: LoadedTable, spec: ModelSpec) -> ValidatedData:
    """Check the table against the model and return the float64 columns and the design."""
    columns = select_columns(table, spec)
    frame = check_values(table, columns)
    check_magnitudes(table, frame, spec.degree)
    design = Design.from_arrays(
        frame.loc[:, list(columns[1:])].to_numpy(dtype=np.float64),
        frame[columns[0]].to_numpy(dtype=np.float64),
        tuple(columns[1:]), target=columns[0], degree=spec.degree, intercept=spec.intercept,
    )
    check_design(design, table.source)
    return ValidatedData(frame, design, table.source)


@task(name="validate-data")
def validate_data(table: LoadedTable, spec: ModelSpec) -> ValidatedData:
    """Check that the table can be fitted by the model."""
    return validate_table(table, spec)
