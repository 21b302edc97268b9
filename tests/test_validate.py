"""Loading and validating the input: one error-path test per rule, and the formats users really have."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.config import ModelSpec
from tasks.errors import UserInputError
from tasks.load import load_table
from tasks.validate import validate_table
from tests.helpers import TUTORIAL_X, TUTORIAL_Y

# A small well-posed table: y ~ x1 + x2 with x1, x2 not collinear.
GOOD_ROWS = "x1,x2,y\n1,5,2.0\n2,3,3.5\n3,8,4.1\n4,1,6.0\n5,7,7.2\n"


def _csv(tmp_path: Path, text: str, name: str = "data.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8", newline="")
    return path


def _parquet(path: Path, columns: dict) -> Path:
    pq.write_table(pa.table(columns), path)
    return path


def _run(path: Path, **spec) -> object:
    return validate_table(load_table(path), ModelSpec(**spec))


def _names(path: Path) -> str:
    """A pattern matching the path as given or resolved, so messages must name the file."""
    return f"({re.escape(str(path))}|{re.escape(str(path.resolve()))})"


# --- load errors --------------------------------------------------------------------------------


def test_it_rejects_a_missing_file(tmp_path):
    """A path that does not exist is named in the message."""
    path = tmp_path / "nope.csv"
    with pytest.raises(UserInputError, match=_names(path) + ".*no such file"):
        load_table(path)


def test_it_rejects_an_unsupported_extension(tmp_path):
    """Only .csv, .parquet and folders of .parquet are read; the message quotes the extension."""
    path = _csv(tmp_path, GOOD_ROWS, name="data.txt")
    with pytest.raises(UserInputError, match=_names(path) + ".*unsupported file type '.txt'"):
        load_table(path)


def test_it_rejects_an_empty_csv(tmp_path):
    """An empty (or whitespace-only) CSV names the file."""
    path = _csv(tmp_path, "\n\n")
    with pytest.raises(UserInputError, match=_names(path) + ".*empty"):
        load_table(path)


def test_it_rejects_an_unreadable_parquet_file(tmp_path):
    """Bytes that are not Parquet give a clear message, not a pyarrow traceback."""
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"this is not parquet at all")
    with pytest.raises(UserInputError, match=_names(path) + ".*not a readable Parquet file"):
        load_table(path)


def test_it_rejects_a_folder_without_parquet_files(tmp_path):
    """A folder must hold at least one .parquet file."""
    folder = tmp_path / "parts"
    folder.mkdir()
    _csv(folder, GOOD_ROWS)
    with pytest.raises(UserInputError, match=_names(folder) + ".*no .parquet files"):
        load_table(folder)


def test_it_rejects_parquet_files_whose_schemas_differ_naming_the_odd_file(tmp_path):
    """In a folder every file must share the first file's schema; the message names the odd one."""
    folder = tmp_path / "parts"
    folder.mkdir()
    _parquet(folder / "a.parquet", {"x": [1.0, 2.0], "y": [3.0, 4.0]})
    odd = _parquet(folder / "b.parquet", {"x": [1.0, 2.0], "z": [3.0, 4.0]})
    with pytest.raises(UserInputError, match=_names(odd) + ".*schema.*differs from a.parquet"):
        load_table(folder)


# --- column selection ----------------------------------------------------------------------------


def test_it_rejects_duplicate_column_names(tmp_path):
    """Two columns called x are ambiguous, even if pandas would rename one 'x.1'."""
    path = _csv(tmp_path, "x,x,y\n1,2,3\n2,3,5\n3,5,6\n4,4,8\n")
    with pytest.raises(UserInputError, match=_names(path) + ".*duplicate column.*'x'"):
        _run(path)


def test_it_rejects_a_missing_target(tmp_path):
    """--target names a column that is not there: the message names it and lists the columns."""
    path = _csv(tmp_path, GOOD_ROWS)
    with pytest.raises(UserInputError, match=_names(path) + ".*target column 'price' not found.*x1, x2, y"):
        _run(path, target="price")


def test_it_rejects_a_missing_feature(tmp_path):
    """--features names a column that is not there."""
    path = _csv(tmp_path, GOOD_ROWS)
    with pytest.raises(UserInputError, match=_names(path) + ".*feature column 'x3' not found"):
        _run(path, features=("x1", "x3"))


def test_it_rejects_the_target_as_a_feature(tmp_path):
    """The target cannot also be a predictor; the message names the option and the column."""
    path = _csv(tmp_path, GOOD_ROWS)
    with pytest.raises(UserInputError, match=r"--features.*'y'.*also a feature"):
        _run(path, features=("x1", "y"))


def test_it_rejects_a_feature_named_twice(tmp_path):
    """--features x1,x1 is a mistake, not a request for two identical columns."""
    path = _csv(tmp_path, GOOD_ROWS)
    with pytest.raises(UserInputError, match=r"--features.*'x1'.*named twice"):
        _run(path, features=("x1", "x1"))


def test_it_rejects_a_polynomial_in_two_features(tmp_path):
    """--degree > 1 needs exactly one feature."""
    path = _csv(tmp_path, GOOD_ROWS)
    with pytest.raises(UserInputError, match=r"--degree 2.*exactly one feature.*got 2 \(x1, x2\)"):
        _run(path, degree=2)


# --- values --------------------------------------------------------------------------------------


def test_it_rejects_a_non_numeric_value_naming_column_row_and_value(tmp_path):
    """'abc' in column x1 on the third data row (line 4): all three are in the message."""
    path = _csv(tmp_path, "x1,x2,y\n1,5,2\n2,3,3\nabc,8,4\n4,1,6\n5,7,7\n")
    with pytest.raises(UserInputError, match=_names(path) + r".*'x1'.*row 3 \(line 4\).*'abc'.*not a number"):
        _run(path, features=("x1", "x2"))


def test_it_rejects_a_missing_value(tmp_path):
    """An empty cell is a missing value; the message names its column and row."""
    path = _csv(tmp_path, "x1,x2,y\n1,5,2\n2,,3\n3,8,4\n4,1,6\n5,7,7\n")
    with pytest.raises(UserInputError, match=_names(path) + r".*'x2'.*row 2 \(line 3\).*missing value"):
        _run(path)


def test_it_rejects_an_infinite_value(tmp_path):
    """inf parses as a float but cannot be fitted."""
    path = _csv(tmp_path, "x1,x2,y\n1,5,2\n2,3,3\n3,8,inf\n4,1,6\n5,7,7\n")
    with pytest.raises(UserInputError, match=_names(path) + r".*'y'.*row 3 \(line 4\).*not finite"):
        _run(path)


def test_it_rejects_an_infinite_value_in_parquet(tmp_path):
    """The same rule holds for Parquet input (rows are numbered without a line)."""
    path = _parquet(tmp_path / "d.parquet", {"x": [1.0, 2.0, np.inf, 4.0], "y": [1.0, 2.0, 3.0, 5.0]})
    with pytest.raises(UserInputError, match=_names(path) + r".*'x'.*row 3.*not finite"):
        _run(path)


# --- design ----------------------------------------------------------------------------------------


def test_it_rejects_too_few_rows(tmp_path):
    """Two rows cannot fit intercept + slope with a residual: n must exceed the number of parameters."""
    path = _csv(tmp_path, "x,y\n1,2\n2,3\n")
    with pytest.raises(UserInputError, match=_names(path) + r".*2 rows.*2 parameters.*at least 3 rows"):
        _run(path)


def test_it_rejects_a_constant_predictor_with_an_intercept(tmp_path):
    """A constant column duplicates the intercept."""
    path = _csv(tmp_path, "x,y\n4,1\n4,2\n4,3\n4,5\n")
    with pytest.raises(UserInputError, match=_names(path) + r".*'x' is constant.*intercept"):
        _run(path)


def test_it_rejects_exactly_collinear_columns_naming_both(tmp_path):
    """x2 = 2 * x1: the design is rank deficient and both columns are named."""
    path = _csv(tmp_path, "x1,x2,y\n1,2,1.5\n2,4,2.9\n3,6,4.2\n4,8,4.8\n5,10,6.1\n")
    with pytest.raises(UserInputError, match=_names(path) + r".*rank deficient") as info:
        _run(path)
    assert "'x1'" in str(info.value) and "'x2'" in str(info.value)


def test_it_rejects_a_degree_above_the_distinct_values(tmp_path):
    """Degree 5 with only three distinct x values cannot be fitted (needs 6 with an intercept)."""
    xs = [1, 2, 3, 1, 2, 3, 1, 2]
    path = _csv(tmp_path, "x,y\n" + "".join(f"{x},{x * 1.5 + i * 0.1}\n" for i, x in enumerate(xs)))
    with pytest.raises(UserInputError, match=_names(path) + r".*'x' has 3 distinct values.*--degree 5"):
        _run(path, degree=5)


# --- formats that must work ------------------------------------------------------------------------


def _tutorial_text(sep: str = ",", newline: str = "\n", header: str = "x,y") -> str:
    rows = [header.replace(",", sep)] + [f"{x}{sep}{y}" for x, y in zip(TUTORIAL_X, TUTORIAL_Y)]
    return newline.join(rows) + newline


def _assert_tutorial(data, x: str = "x") -> None:
    assert data.design.names == (x,)
    np.testing.assert_array_equal(data.design.features[:, 0], TUTORIAL_X)
    np.testing.assert_array_equal(data.design.y, TUTORIAL_Y)


def test_it_reads_utf8_with_a_byte_order_mark(tmp_path):
    """A UTF-8 BOM (Excel's 'CSV UTF-8') does not end up in the first column's name."""
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf" + _tutorial_text().encode("utf-8"))
    _assert_tutorial(_run(path))


def test_it_reads_utf16_with_a_byte_order_mark(tmp_path):
    """UTF-16 with a BOM (Excel's 'Unicode text') is decoded."""
    path = tmp_path / "utf16.csv"
    path.write_bytes(_tutorial_text().encode("utf-16"))
    _assert_tutorial(_run(path))


def test_it_reads_cp1252_with_a_non_ascii_column_name(tmp_path):
    """A Windows-1252 file with the column 'température' keeps the accent."""
    path = tmp_path / "cp1252.csv"
    path.write_bytes(_tutorial_text(header="température,y").encode("cp1252"))
    _assert_tutorial(_run(path), x="température")


def test_it_reads_crlf_line_endings(tmp_path):
    """Windows line endings leave no '\\r' in names or values."""
    path = _csv(tmp_path, _tutorial_text(newline="\r\n"))
    _assert_tutorial(_run(path))


def test_it_reads_a_semicolon_delimiter(tmp_path):
    """Semicolon-separated files (European Excel) are detected."""
    path = _csv(tmp_path, _tutorial_text(sep=";"))
    _assert_tutorial(_run(path))


def test_it_reads_quoted_numbers(tmp_path):
    """'"1.5"' is the number 1.5."""
    rows = "".join(f'"{x}","{y}"\n' for x, y in zip(TUTORIAL_X, TUTORIAL_Y))
    path = _csv(tmp_path, '"x","y"\n' + rows)
    _assert_tutorial(_run(path))


def test_it_concatenates_a_folder_of_parquet_files_in_name_order(tmp_path):
    """Files with one schema are read sorted by name and stacked."""
    folder = tmp_path / "parts"
    folder.mkdir()
    # Written out of order on purpose: b first, then a.
    _parquet(folder / "b.parquet", {"x": TUTORIAL_X[5:], "y": TUTORIAL_Y[5:]})
    _parquet(folder / "a.parquet", {"x": TUTORIAL_X[:5], "y": TUTORIAL_Y[:5]})
    table = load_table(folder)
    assert table.kind == "parquet-folder"
    _assert_tutorial(validate_table(table, ModelSpec()))


def test_default_features_are_every_other_numeric_column(tmp_path):
    """Without --features every numeric column but the target is a feature; a text column is skipped."""
    path = _csv(tmp_path, "name,x1,y,x2\na,1,2.0,5\nb,2,3.5,3\nc,3,4.1,8\nd,4,6.0,1\ne,5,7.2,7\n")
    data = _run(path)
    assert data.design.names == ("x1", "x2")
    assert list(data.frame.columns) == ["y", "x1", "x2"]
    assert data.frame.dtypes.tolist() == [np.float64] * 3


def test_the_validated_table_is_float64_with_the_target_first(tmp_path):
    """Integers are widened to float64 and the source is the absolute path."""
    path = _parquet(tmp_path / "ints.parquet", {"x": [1, 2, 3, 5], "y": [2, 4, 7, 9]})
    data = _run(path)
    assert data.source == str(path.resolve())
    pd.testing.assert_frame_equal(
        data.frame, pd.DataFrame({"y": [2.0, 4.0, 7.0, 9.0], "x": [1.0, 2.0, 3.0, 5.0]})
    )
