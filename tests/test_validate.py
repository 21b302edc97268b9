"""Loading and validating the input: one error-path test per rule, and the formats users really have.

Every input goes through prepare_data (the one streamed pass); a rejected one must leave its data
folder absent (_run checks it on every error)."""

from __future__ import annotations

import math
import re
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.config import ModelSpec
from tasks.errors import UserInputError
from tasks.exact.fit import fit_exact
from tasks.ingest.load import open_input
from tasks.ingest.prepare import Prepared, prepare_data
from tasks.ingest.validate import magnitude_limit
from tasks.kernels.table import BLOCK_ROWS
from tests.helpers import TUTORIAL_B0, TUTORIAL_B1, TUTORIAL_X, TUTORIAL_Y, max_rel_error
from tests.prefect_server import BIN, cli_env

# Row numbers in messages must not depend on how the rows were read: in one block, or two at a time.
BLOCKINGS = pytest.mark.parametrize("block_rows", [BLOCK_ROWS, 2], ids=["one-block", "2-row-blocks"])

# A small well-posed table: y ~ x1 + x2 with x1, x2 not collinear.
GOOD_ROWS = "x1,x2,y\n1,5,2.0\n2,3,3.5\n3,8,4.1\n4,1,6.0\n5,7,7.2\n"


def _csv(tmp_path: Path, text: str, name: str = "data.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8", newline="")
    return path


def _parquet(path: Path, columns: dict) -> Path:
    pq.write_table(pa.table(columns), path)
    return path


def _snapshot(folder: Path) -> dict[str, int] | None:
    """Every entry under folder with its mtime (folders' mtimes move when anything is made in them)."""
    if not folder.exists():
        return None
    return {str(p): p.stat().st_mtime_ns for p in [folder, *folder.rglob("*")]}


def _run(path: Path, block_rows: int = BLOCK_ROWS, **spec) -> Prepared:
    """prepare_data into a data folder beside the input; a rejection must leave that folder as it was."""
    data_dir = path.parent / "store"
    before = _snapshot(data_dir)
    try:
        return prepare_data(ModelSpec(**spec), path, data_dir, block_rows)
    except UserInputError:
        assert _snapshot(data_dir) == before, "a rejected input changed the data folder"
        raise


def _features_and_y(data: Prepared, spec: ModelSpec = ModelSpec()) -> tuple[np.ndarray, np.ndarray]:
    """The stored columns, read back from the stored Parquet file."""
    design = data.design(spec)
    return design.features, design.y


def _names(path: Path) -> str:
    """A pattern matching the path as given or resolved, so messages must name the file."""
    return f"({re.escape(str(path))}|{re.escape(str(path.resolve()))})"


# --- load errors --------------------------------------------------------------------------------


def test_it_rejects_a_missing_file(tmp_path):
    """A path that does not exist is named in the message."""
    path = tmp_path / "nope.csv"
    with pytest.raises(UserInputError, match=_names(path) + ".*no such file"):
        _run(path)


def test_it_rejects_an_unsupported_extension(tmp_path):
    """Only .csv, .parquet and folders of .parquet are read; the message quotes the extension."""
    path = _csv(tmp_path, GOOD_ROWS, name="data.txt")
    with pytest.raises(UserInputError, match=_names(path) + ".*unsupported file type '.txt'"):
        _run(path)


def test_it_rejects_an_empty_csv(tmp_path):
    """An empty (or whitespace-only) CSV names the file."""
    path = _csv(tmp_path, "\n\n")
    with pytest.raises(UserInputError, match=_names(path) + ".*empty"):
        _run(path)


def test_it_rejects_an_unreadable_parquet_file(tmp_path):
    """Bytes that are not Parquet give a clear message, not a pyarrow traceback."""
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"this is not parquet at all")
    with pytest.raises(UserInputError, match=_names(path) + ".*not a readable Parquet file"):
        _run(path)


def test_it_rejects_a_folder_without_parquet_files(tmp_path):
    """A folder must hold at least one .parquet file."""
    folder = tmp_path / "parts"
    folder.mkdir()
    _csv(folder, GOOD_ROWS)
    with pytest.raises(UserInputError, match=_names(folder) + ".*no .parquet files"):
        _run(folder)


def test_it_rejects_parquet_files_whose_schemas_differ_naming_the_odd_file(tmp_path):
    """In a folder every file must share the first file's schema; the message names the odd one."""
    folder = tmp_path / "parts"
    folder.mkdir()
    _parquet(folder / "a.parquet", {"x": [1.0, 2.0], "y": [3.0, 4.0]})
    odd = _parquet(folder / "b.parquet", {"x": [1.0, 2.0], "z": [3.0, 4.0]})
    with pytest.raises(UserInputError, match=_names(odd) + ".*schema.*differs from a.parquet"):
        _run(folder)


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


@BLOCKINGS
def test_it_rejects_a_non_numeric_value_naming_column_row_and_value(tmp_path, block_rows):
    """'abc' in column x1 on the third data row (line 4): all three are in the message."""
    path = _csv(tmp_path, "x1,x2,y\n1,5,2\n2,3,3\nabc,8,4\n4,1,6\n5,7,7\n")
    with pytest.raises(UserInputError, match=_names(path) + r".*'x1'.*row 3 \(line 4\).*'abc'.*not a number"):
        _run(path, block_rows, features=("x1", "x2"))


@BLOCKINGS
def test_it_rejects_a_missing_value(tmp_path, block_rows):
    """An empty cell is a missing value; the message names its column and row."""
    path = _csv(tmp_path, "x1,x2,y\n1,5,2\n2,,3\n3,8,4\n4,1,6\n5,7,7\n")
    with pytest.raises(UserInputError, match=_names(path) + r".*'x2'.*row 2 \(line 3\).*missing value"):
        _run(path, block_rows)


@BLOCKINGS
def test_it_rejects_an_infinite_value(tmp_path, block_rows):
    """inf parses as a float but cannot be fitted."""
    path = _csv(tmp_path, "x1,x2,y\n1,5,2\n2,3,3\n3,8,inf\n4,1,6\n5,7,7\n")
    with pytest.raises(UserInputError, match=_names(path) + r".*'y'.*row 3 \(line 4\).*not finite"):
        _run(path, block_rows)


@BLOCKINGS
def test_it_rejects_an_infinite_value_in_parquet(tmp_path, block_rows):
    """The same rule holds for Parquet input (rows are numbered without a line)."""
    path = _parquet(tmp_path / "d.parquet", {"x": [1.0, 2.0, np.inf, 4.0], "y": [1.0, 2.0, 3.0, 5.0]})
    with pytest.raises(UserInputError, match=_names(path) + r".*'x'.*row 3.*not finite"):
        _run(path, block_rows)


# --- magnitudes: what float64 sums of squares and the double-double split can hold -------------------

HUGE_CSV = "x,y\n1,2\n2,3.1\n1e308,4\n4,5.2\n5,6\n"


@BLOCKINGS
def test_it_rejects_a_value_near_the_float64_limit(tmp_path, block_rows):
    """1e308 squared overflows: the message names column, row, line and value, and how to rescale."""
    path = _csv(tmp_path, HUGE_CSV)
    with pytest.raises(UserInputError, match=_names(path) + r": column 'x', row 3 \(line 4\): value 1e\+308 is "
                       r"too large: \|value\| must stay below 1\.87e\+152 for 5 rows.*divide it by 1e308"):
        _run(path, block_rows)


def test_it_rejects_a_polynomial_term_beyond_the_limit(tmp_path):
    """x = 1e60 is fine on a line, but x^6 = 1e360 is not: the bound applies to every term value."""
    path = _csv(tmp_path, "x,y\n" + "".join(f"{x},{y}\n" for x, y in zip(TUTORIAL_X, TUTORIAL_Y)) + "1e60,3\n")
    assert _run(path).rows == 11
    with pytest.raises(UserInputError, match=_names(path) + r".*'x', row 11 \(line 12\): value 1e\+60 is too "
                       r"large: \|value\|\^6 \(--degree 6\) must stay below"):
        _run(path, degree=6)


@BLOCKINGS
@pytest.mark.parametrize("scale", [1e-300, 5e-324], ids=["1e-300", "subnormal"])
def test_it_rejects_a_column_whose_values_are_all_tiny(tmp_path, scale, block_rows):
    """A column of values whose squares underflow to 0 (norms would be 0): named with its largest value."""
    path = _parquet(tmp_path / "tiny.parquet", {"x": TUTORIAL_X, "y": TUTORIAL_Y * scale})
    largest = float(TUTORIAL_Y[-1] * scale)
    with pytest.raises(UserInputError, match=_names(path) + rf": column 'y': every value is too small: the "
                       rf"largest, {re.escape(repr(largest))} \(row 10\).*multiply it by"):
        _run(path, block_rows)


def test_it_rejects_columns_whose_coefficient_would_overflow(tmp_path):
    """y ~ 1e100 against x ~ 1e-100: each is within the limit, but the slope (~1e200) squared is not."""
    path = _parquet(tmp_path / "ratio.parquet", {"x": TUTORIAL_X * 1e-100, "y": TUTORIAL_Y * 1e100})
    with pytest.raises(UserInputError, match=_names(path) + r": column 'y' is about 1e201 times column 'x': "
                       r"the coefficient of x would be about that size"):
        _run(path)


def test_the_limit_keeps_every_sum_of_n_squares_finite():
    """B = magnitude_limit(n): n (2B)^2 = MAX / 2^8 (centered values are within 2B), and Dekker's
    split (2^27 + 1) B stays finite."""
    biggest = np.finfo(np.float64).max
    for n in (3, 10, 12345, 10**9):
        limit = magnitude_limit(n)
        assert math.isclose(n * (2 * limit) ** 2, biggest / 2**8, rel_tol=1e-12)
        assert np.isfinite((2.0**27 + 1) * limit)


@pytest.mark.parametrize("x_scale, y_scale", [(1.0, 2.0**499), (2.0**-501, 1.0)], ids=["y-huge", "x-tiny"])
def test_data_just_inside_the_limits_fits_like_the_unscaled_data(tmp_path, x_scale, y_scale):
    """Powers of two scale the tutorial exactly: b0 scales as y, b1 as y / x; one doubling more is refused."""
    path = _parquet(tmp_path / "edge.parquet", {"x": TUTORIAL_X * x_scale, "y": TUTORIAL_Y * y_scale})
    data = _run(path)
    fit = fit_exact(data.design(ModelSpec()), data.geometry)
    assert max_rel_error(fit.params, [TUTORIAL_B0 * y_scale, TUTORIAL_B1 * y_scale / x_scale]) < 1e-13
    assert np.all(np.isfinite(fit.se_coefficients)) and 0 < fit.r_squared < 1
    beyond = _parquet(tmp_path / "beyond.parquet", {"x": TUTORIAL_X * x_scale / 2, "y": TUTORIAL_Y * y_scale * 2})
    with pytest.raises(UserInputError, match="too large|too small|times column"):
        _run(beyond)


def test_a_column_mixing_1e150_and_ones_fits(tmp_path):
    """Large and ordinary values in one column are fine as long as every value is within the limit."""
    x = np.array([1.0, 2.0, 1e150, 3.0, 4.0, 5.0])
    y = np.array([2.0, 2.9, 4.1, 5.2, 5.9, 7.1])
    data = _run(_parquet(tmp_path / "mixed.parquet", {"x": x, "y": y}))
    fit = fit_exact(data.design(ModelSpec()), data.geometry)
    b1 = np.cov(x / 1e150, y)[0, 1] / np.var(x / 1e150, ddof=1) / 1e150  # the slope, computed on x / 1e150
    assert max_rel_error(fit.params, [np.mean(y) - b1 * np.mean(x), b1]) < 1e-12


def test_a_header_without_rows_is_refused_as_too_few_rows(tmp_path):
    """No rows at all: the magnitude rules have nothing to bound and the row count rule speaks."""
    path = _csv(tmp_path, "x,y\n")
    with pytest.raises(UserInputError, match=_names(path) + r": 0 rows.*at least 3 rows"):
        _run(path, features=("x",))


def test_linreg_run_refuses_a_1e308_value_with_exit_2_and_writes_nothing(tmp_path):
    """The real command: exit 2, one line on stderr naming the file, column and value, nothing written."""
    work = tmp_path / "work"
    work.mkdir()
    path = _csv(work, HUGE_CSV, name="huge.csv")
    done = subprocess.run(
        [str(BIN / "linreg"), "run", str(path), "--artifacts-dir", str(work / "artifacts"),
         "--data-dir", str(work / "data")],
        env=cli_env(tmp_path / "home"), capture_output=True, text=True, timeout=300, cwd=work)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert "huge.csv" in lines[0] and "column 'x'" in lines[0] and "1e+308" in lines[0]
    assert done.stdout == ""
    assert [p.name for p in work.iterdir()] == ["huge.csv"]


# --- design ----------------------------------------------------------------------------------------


def test_it_rejects_too_few_rows(tmp_path):
    """Two rows cannot fit intercept + slope with a residual: n must exceed the number of parameters."""
    path = _csv(tmp_path, "x,y\n1,2\n2,3\n")
    with pytest.raises(UserInputError, match=_names(path) + r".*2 rows.*2 parameters.*at least 3 rows"):
        _run(path)


@BLOCKINGS
def test_it_rejects_a_constant_predictor_with_an_intercept(tmp_path, block_rows):
    """A constant column duplicates the intercept."""
    path = _csv(tmp_path, "x,y\n4,1\n4,2\n4,3\n4,5\n")
    with pytest.raises(UserInputError, match=_names(path) + r".*'x' is constant.*intercept"):
        _run(path, block_rows)


@BLOCKINGS
def test_it_rejects_a_constant_target_with_an_intercept(tmp_path, block_rows):
    """A constant target has no variation to explain: R² is undefined (0/0), so it is refused."""
    path = _csv(tmp_path, "x,y\n1,7.5\n2,7.5\n3,7.5\n4,7.5\n")
    with pytest.raises(UserInputError, match=_names(path) + r".*target column 'y' is constant.*7\.5.*R² is undefined"):
        _run(path, block_rows)


@BLOCKINGS
def test_it_rejects_a_zero_target_without_an_intercept_and_accepts_a_constant_one(tmp_path, block_rows):
    """Without an intercept R² is uncentered (sum of y²): undefined only when y is 0 on every row."""
    path = _csv(tmp_path, "x,y\n1,0\n2,0\n3,0\n4,0\n")
    with pytest.raises(UserInputError, match=_names(path) + r".*target column 'y' is 0 on every row.*uncentered R²"):
        _run(path, block_rows, intercept=False)
    assert _run(_csv(tmp_path, "x,y\n1,3\n2,3\n3,3\n4,3\n", "three.csv"), block_rows, intercept=False).rows == 4


@BLOCKINGS
def test_it_rejects_an_all_zero_feature_naming_it(tmp_path, block_rows):
    """A column of zeros: with an intercept it is constant; without one the design is rank deficient
    and the message says the column is 0 (it once overflowed in the magnitude check instead)."""
    path = _csv(tmp_path, "x,z,y\n1,0,2\n2,0,3\n3,0,5\n4,0,4\n")
    with pytest.raises(UserInputError, match=_names(path) + r".*'z' is constant \(every row is 0\.0\)"):
        _run(path, block_rows)
    with pytest.raises(UserInputError, match=_names(path) + r".*rank deficient: column 'z' is 0 on every row"):
        _run(path, block_rows, intercept=False)


@BLOCKINGS
def test_it_rejects_exactly_collinear_columns_naming_both(tmp_path, block_rows):
    """x2 = 2 * x1: the design is rank deficient and both columns are named."""
    path = _csv(tmp_path, "x1,x2,y\n1,2,1.5\n2,4,2.9\n3,6,4.2\n4,8,4.8\n5,10,6.1\n")
    with pytest.raises(UserInputError, match=_names(path) + r".*rank deficient") as info:
        _run(path, block_rows)
    assert "'x1'" in str(info.value) and "'x2'" in str(info.value)


@BLOCKINGS
def test_it_rejects_a_degree_above_the_distinct_values(tmp_path, block_rows):
    """Degree 5 with only three distinct x values cannot be fitted (needs 6 with an intercept)."""
    xs = [1, 2, 3, 1, 2, 3, 1, 2]
    path = _csv(tmp_path, "x,y\n" + "".join(f"{x},{x * 1.5 + i * 0.1}\n" for i, x in enumerate(xs)))
    with pytest.raises(UserInputError, match=_names(path) + r".*'x' has 3 distinct values.*--degree 5"):
        _run(path, block_rows, degree=5)


# --- formats that must work ------------------------------------------------------------------------


def _tutorial_text(sep: str = ",", newline: str = "\n", header: str = "x,y") -> str:
    rows = [header.replace(",", sep)] + [f"{x}{sep}{y}" for x, y in zip(TUTORIAL_X, TUTORIAL_Y)]
    return newline.join(rows) + newline


def _assert_tutorial(data: Prepared, x: str = "x") -> None:
    assert data.columns == ("y", x)
    features, y = _features_and_y(data)
    np.testing.assert_array_equal(features[:, 0], TUTORIAL_X)
    np.testing.assert_array_equal(y, TUTORIAL_Y)


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
    assert open_input(folder).kind == "parquet-folder"
    _assert_tutorial(_run(folder))


def test_default_features_are_every_other_numeric_column(tmp_path):
    """Without --features every numeric column but the target is a feature; a text column is skipped."""
    path = _csv(tmp_path, "name,x1,y,x2\na,1,2.0,5\nb,2,3.5,3\nc,3,4.1,8\nd,4,6.0,1\ne,5,7.2,7\n")
    data = _run(path)
    assert data.columns == ("y", "x1", "x2")
    stored = pd.read_parquet(data.path)
    assert list(stored.columns) == ["y", "x1", "x2"]
    assert stored.dtypes.tolist() == [np.float64] * 3


def test_the_validated_table_is_float64_with_the_target_first(tmp_path):
    """Integers are widened to float64 and the source is the absolute path."""
    path = _parquet(tmp_path / "ints.parquet", {"x": [1, 2, 3, 5], "y": [2, 4, 7, 9]})
    data = _run(path)
    assert data.source == str(path.resolve())
    pd.testing.assert_frame_equal(
        pd.read_parquet(data.path), pd.DataFrame({"y": [2.0, 4.0, 7.0, 9.0], "x": [1.0, 2.0, 3.0, 5.0]})
    )


# --- which columns, and every missing cell at once ------------------------------------------------


def _houses(rows: int = 25, blank: dict | None = None) -> str:
    """id, k (0, 1, 2, ...), area, rooms, a text column and price; blank: column -> data rows (1-based)."""
    lines = ["id,k,area,rooms,neighborhood,price"]
    for i in range(1, rows + 1):
        cells = {"id": str(i), "k": str(i - 1), "area": f"{50 + 7 * i % 31}.5", "rooms": str(1 + i % 5),
                 "neighborhood": "north" if i % 2 else "south", "price": f"{1000 + 13 * i + (i * i) % 17}"}
        for column, at in (blank or {}).items():
            if i in at:
                cells[column] = ""
        lines.append(",".join(cells.values()))
    return "\n".join(lines) + "\n"


def test_default_features_leave_out_row_indexes_and_text_columns_and_say_why(tmp_path):
    """Without --features: 'id' (named like a row identifier) and 'k' (0, 1, 2, ... row by row) are
    left out as row indexes, 'neighborhood' as not numeric; the note names each and --features."""
    prepared = _run(_csv(tmp_path, _houses()), target="price")
    assert prepared.columns == ("price", "area", "rooms")
    note = prepared.selection
    assert note.startswith("features: area, rooms (every numeric column but the target)")
    assert "'id' (looks like a row index: named like a row identifier)" in note
    assert "'k' (looks like a row index: it counts the rows: 0, 1, 2, ...)" in note
    assert "'neighborhood' (not numeric)" in note and "--features" in note


def test_features_named_with_the_option_include_a_row_index(tmp_path):
    """--features id,area: the user's choice is kept and the note says where it came from."""
    prepared = _run(_csv(tmp_path, _houses()), target="price", features=("id", "area"))
    assert prepared.columns == ("price", "id", "area")
    assert prepared.selection == "features: id, area (--features)"


def test_a_short_counting_column_is_a_feature(tmp_path):
    """Fewer than 20 rows of 1, 2, 3, ...: a measurement (the tutorial's x could be), not an index."""
    prepared = _run(_csv(tmp_path, "x,y\n1,2.5\n2,3.9\n3,6.1\n4,8.2\n5,9.8\n"))
    assert prepared.columns == ("y", "x")


@BLOCKINGS
def test_every_missing_cell_is_counted_per_column_in_one_message(tmp_path, block_rows):
    """Blank cells in two columns: one message with the total, each column's count and the place of
    its first blank cell, in the pass that finds them; nothing is stored."""
    path = _csv(tmp_path, _houses(blank={"rooms": [2, 9], "area": [4, 5, 20]}))
    pattern = (_names(path) + r"?.*5 missing values in 2 columns: column 'area': 3 missing values, the first in "
               r".*data\.csv, row 4 \(line 5\); column 'rooms': 2 missing values, the first in .*row 2 \(line 3\)")
    with pytest.raises(UserInputError, match=pattern):
        _run(path, block_rows, target="price", features=("area", "rooms"))


def test_a_value_that_is_not_a_number_is_still_named_at_once_beside_blank_cells(tmp_path):
    """A blank cell and, later, text in a numeric column: the text is the error (it is no blank)."""
    path = _csv(tmp_path, "x,y\n1,2\n,3\n3,abc\n4,5\n5,6\n")
    with pytest.raises(UserInputError, match=r"column 'y', row 3 \(line 4\): value 'abc' is not a number"):
        _run(path)


def test_decimal_commas_read_with_the_option_and_are_named_without_it(tmp_path):
    """'1,5;2,25' rows: refused with a hint naming --decimal , ; read as 1.5 and 2.25 with it, with
    the same content hash as the same numbers written with points."""
    commas = _csv(tmp_path, "x;y\n1,5;2,25\n2,5;3,9\n3,1;6,15\n4,0;8,2\n5,2;9,8\n", "commas.csv")
    with pytest.raises(UserInputError, match=r"'x' not numeric \('1,5' reads as a number with --decimal ,\)"):
        _run(commas)
    with pytest.raises(UserInputError, match=r"value '2,25' is not a number \('2,25' reads as a number with --decimal ,\)"):
        _run(commas, features=("x",))
    points = _csv(tmp_path, "x,y\n1.5,2.25\n2.5,3.9\n3.1,6.15\n4.0,8.2\n5.2,9.8\n", "points.csv")
    read = prepare_data(ModelSpec(), commas, tmp_path / "store", decimal=",")
    assert read.sha256 == prepare_data(ModelSpec(), points, tmp_path / "store2").sha256


def test_decimal_commas_need_another_separator(tmp_path):
    """--decimal , on a comma-separated file is refused, naming the option."""
    with pytest.raises(UserInputError, match=r"option --decimal ,: the values are separated by commas too"):
        prepare_data(ModelSpec(), _csv(tmp_path, GOOD_ROWS), tmp_path / "store", decimal=",")
