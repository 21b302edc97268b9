"""Load step: read a CSV file, a Parquet file or a folder of Parquet files into a DataFrame."""

from __future__ import annotations

import codecs
import csv
import io
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from prefect import task

from tasks.errors import UserInputError, retry_unless_user_error

# Encodings tried in order for a CSV without a byte-order mark; cp1252 accepts almost any bytes.
_FALLBACK_ENCODINGS = ("utf-8", "cp1252")
_DELIMITERS = ",;\t|"


@dataclass(frozen=True)
class LoadedTable:
    """A table as read from disk, before validation.

    frame: (n_rows, n_columns); source: absolute path; header: column names as written in the file
    (duplicates kept, so validation can name them); kind: "csv", "parquet" or "parquet-folder";
    line_offset: file line of data row 0 (CSV only, for messages).
    """

    frame: pd.DataFrame
    source: str
    header: tuple[str, ...]
    kind: str
    line_offset: int | None = None


def _detect_encoding(raw: bytes) -> str:
    """Pick an encoding: a byte-order mark wins, then UTF-8, then cp1252."""
    if raw.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    for encoding in _FALLBACK_ENCODINGS:
        try:
            raw[:1 << 20].decode(encoding)
            return encoding
        except UnicodeDecodeError as exc:
            # A multi-byte character cut at the 1 MiB boundary is not a decoding error.
            if encoding == "utf-8" and exc.start >= (1 << 20) - 4:
                return encoding
    return "latin-1"


def read_csv(path: Path) -> LoadedTable:
    """Read a CSV with any common encoding (BOM, UTF-16, cp1252), line ending and delimiter."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UserInputError(f"{path}: cannot read file ({exc.strerror})") from None
    encoding = _detect_encoding(raw)
    text = raw.decode(encoding, errors="strict" if encoding != "latin-1" else "replace")
    if not text.strip():
        raise UserInputError(f"{path}: the file is empty")
    sample = text[: 1 << 16]
    try:
        delimiter = csv.Sniffer().sniff(sample.splitlines()[0], delimiters=_DELIMITERS).delimiter
    except csv.Error:
        delimiter = ","
    header_row = next(csv.reader(io.StringIO(sample), delimiter=delimiter))
    header = tuple(name.strip() for name in header_row)
    try:
        frame = pd.read_csv(io.StringIO(text), sep=delimiter, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserInputError(f"{path}: not a readable CSV file ({first})") from None
    if len(frame.columns) == len(header):
        frame.columns = list(header)
    # Data row 0 sits on line 2 when the header is one line (no quoted newlines in it).
    return LoadedTable(frame, str(path.resolve()), header, "csv", line_offset=2)


def _read_parquet_file(path: Path) -> pa.Table:
    try:
        return pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise UserInputError(f"{path}: not a readable Parquet file ({exc})") from None


def read_parquet(path: Path) -> LoadedTable:
    """Read one Parquet file."""
    table = _read_parquet_file(path)
    return LoadedTable(table.to_pandas(), str(path.resolve()), tuple(table.column_names), "parquet")


def read_parquet_folder(path: Path) -> LoadedTable:
    """Read every *.parquet file of a folder (sorted by name); they must share one schema."""
    files = sorted(p for p in path.iterdir() if p.suffix == ".parquet" and p.is_file())
    if not files:
        raise UserInputError(f"{path}: the folder holds no .parquet files")
    tables = [_read_parquet_file(f) for f in files]
    first = tables[0].schema.remove_metadata()
    for file, table in zip(files[1:], tables[1:]):
        if not table.schema.remove_metadata().equals(first):
            raise UserInputError(
                f"{file}: its schema ({_describe(table.schema)}) differs from "
                f"{files[0].name} ({_describe(first)})"
            )
    merged = pa.concat_tables(t.replace_schema_metadata(None) for t in tables)
    return LoadedTable(merged.to_pandas(), str(path.resolve()), tuple(first.names), "parquet-folder")


def _describe(schema: pa.Schema) -> str:
    return ", ".join(f"{f.name}: {f.type}" for f in schema)


def load_table(path: Path | str) -> LoadedTable:
    """Read DATA: a .csv file, a .parquet file or a folder of .parquet files."""
    path = Path(path)
    if not path.exists():
        raise UserInputError(f"{path}: no such file or folder")
    if path.is_dir():
        return read_parquet_folder(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return read_csv(path)
    if suffix in (".parquet", ".pq"):
        return read_parquet(path)
    raise UserInputError(f"{path}: unsupported file type {suffix or '(none)'!r}; use .csv or .parquet")


@task(name="load-data", retries=2, retry_delay_seconds=2, retry_condition_fn=retry_unless_user_error)
def load_data(path: str) -> LoadedTable:
    """Read the input table from disk."""
    return load_table(path)
