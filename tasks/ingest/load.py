"""Load step: open DATA (a CSV file, a Parquet file or a folder of Parquet files, local or at a URL:
tasks/storage.py) and stream its rows in blocks; no step ever holds the whole file in memory."""

from __future__ import annotations

import bisect
import codecs
import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.errors import UserInputError
from tasks.storage import Location, filesystem, is_url, location, open_binary, readable, shown, storage_error

# Encodings tried in order for a CSV without a byte-order mark; cp1252 accepts almost any bytes.
_FALLBACK_ENCODINGS = ("utf-8", "cp1252")
_DELIMITERS = ",;\t|"
_SNIFF_BYTES = 1 << 20  # encoding, delimiter and header come from the first MiB

Column = pd.Series | pa.Array


@dataclass(frozen=True)
class RawBlock:
    """Consecutive rows of the input as read, before validation.

    columns: one per requested name, (m,) each: pandas Series (CSV) or pyarrow arrays (Parquet);
    first_row: index of the block's first row over the whole input (0-based, header excluded).
    """

    columns: tuple[Column, ...]
    first_row: int

    @property
    def rows(self) -> int:
        return len(self.columns[0]) if self.columns else 0


def _detect_encoding(raw: bytes, whole: bool) -> str:
    """Pick an encoding from the first bytes: a byte-order mark wins, then UTF-8, then cp1252."""
    if raw.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    for encoding in _FALLBACK_ENCODINGS:
        try:
            raw.decode(encoding)
            return encoding
        except UnicodeDecodeError as exc:
            # A multi-byte character cut at the end of the sample is not a decoding error.
            if encoding == "utf-8" and not whole and exc.start >= len(raw) - 4:
                return encoding
    return "latin-1"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class CsvInput:
    """A CSV file with any common encoding (BOM, UTF-16, cp1252), line ending and delimiter."""

    kind = "csv"
    metadata: dict[bytes, bytes] = {}  # a CSV has no footer

    def __init__(self, path: Location, decimal: str = ".") -> None:
        self.decimal = decimal
        try:
            with open_binary(path) as handle:
                raw = handle.read(_SNIFF_BYTES + 1)
        except UserInputError:
            raise
        except OSError as exc:
            if is_url(path):
                raise storage_error(path, exc) from None
            raise UserInputError(f"{path}: cannot read file ({exc.strerror})") from None
        whole = len(raw) <= _SNIFF_BYTES
        self.path, self.source = path, shown(path) if is_url(path) else str(Path(path).resolve())
        self.encoding = _detect_encoding(raw[:_SNIFF_BYTES], whole)
        sample = raw[:_SNIFF_BYTES].decode(self.encoding, errors="ignore")  # a cut character at the end
        if not sample.strip() and whole:
            raise UserInputError(f"{path}: the file is empty")
        try:
            self.delimiter = csv.Sniffer().sniff(sample.splitlines()[0], delimiters=_DELIMITERS).delimiter
        except (csv.Error, IndexError):
            self.delimiter = ","
        if decimal == "," and self.delimiter == ",":
            raise UserInputError(f"{path}: option --decimal ,: the values are separated by commas too; "
                                 "decimal commas need another separator (;, tab or |)")
        self.header = tuple(name.strip() for name in next(csv.reader(io.StringIO(sample), delimiter=self.delimiter)))

    def _frames(self, block_rows: int) -> Iterator[pd.DataFrame]:
        try:
            # A local file by its path (pandas opens it), a URL's object as a file
            with readable(self.path) as handle, \
                    pd.read_csv(handle, sep=self.delimiter, skipinitialspace=True, encoding=self.encoding,
                                decimal=self.decimal, chunksize=block_rows) as reader:
                yield from reader
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
            raise UserInputError(f"{self.source}: not a readable CSV file ({_first_line(exc)})") from None
        except OSError as exc:
            if is_url(self.path):
                raise storage_error(self.path, exc) from None
            raise

    def _chunks(self, block_rows: int) -> Iterator[pd.DataFrame]:
        """The data rows in frames of block_rows, columns named by the (stripped) header."""
        for frame in self._frames(block_rows):
            if frame.shape[1] != len(self.header):
                raise UserInputError(f"{self.source}: not a readable CSV file (the header names "
                                     f"{len(self.header)} columns, the rows hold {frame.shape[1]})")
            frame.columns = list(self.header)
            yield frame

    def sample(self, block_rows: int) -> pd.DataFrame:
        """The first block_rows data rows (an empty frame of text columns when there are none)."""
        first = next(iter(self._chunks(block_rows)), None)
        return first if first is not None else pd.DataFrame({n: pd.Series([], dtype=object) for n in self.header})

    def blocks(self, names: tuple[str, ...], block_rows: int) -> Iterator[RawBlock]:
        first = 0
        for frame in self._chunks(block_rows):
            yield RawBlock(tuple(frame.iloc[:, self.header.index(n)] for n in names), first)
            first += len(frame)

    def where(self, row: int) -> tuple[str, str]:
        """(file, 'row 3 (line 4)'): rows count from 1 after the header, which is line 1."""
        return self.source, f"row {row + 1} (line {row + 2})"


class ParquetInput:
    """One Parquet file, or the *.parquet files of a folder read one after another in name order."""

    def __init__(self, path: Location, files: list[Location], folder: bool | None = None) -> None:
        self.path, self.files = path, files
        self.source = shown(path) if is_url(path) else str(Path(path).resolve())
        folder = Path(path).is_dir() if folder is None else folder
        self.kind = "parquet-folder" if folder else "parquet"
        metas = [self._metadata(f) for f in files]
        first = metas[0].schema.to_arrow_schema().remove_metadata()
        for file, meta in zip(files[1:], metas[1:]):
            schema = meta.schema.to_arrow_schema().remove_metadata()
            if not schema.equals(first):
                raise UserInputError(
                    f"{file}: its schema ({_describe(schema)}) differs from {files[0].name} ({_describe(first)})")
        self.schema, self.header = first, tuple(first.names)
        # Row index where each file starts, for naming the file of a row.
        self.starts = [0, *accumulate(m.num_rows for m in metas)]
        # Rows of each row group of each file: a part of the table reads only the groups it covers.
        self.groups = [tuple(m.row_group(g).num_rows for g in range(m.num_row_groups)) for m in metas]
        # The footer's key-value metadata of a single file (a stored validated Parquet carries its provenance).
        self.metadata: dict[bytes, bytes] = dict(metas[0].metadata or {}) if self.kind == "parquet" else {}

    @staticmethod
    def _metadata(file: Location) -> pq.FileMetaData:
        try:
            with readable(file) as handle:
                return pq.read_metadata(handle)
        except (OSError, pa.ArrowException) as exc:
            if is_url(file) and not isinstance(exc, pa.ArrowException):
                raise storage_error(file, exc) from None
            raise UserInputError(f"{shown(file)}: not a readable Parquet file ({_first_line(exc)})") from None

    def _batches(self, names: list[str] | None, block_rows: int,
                 rows: tuple[int, int] | None = None) -> Iterator[tuple[Location, pa.RecordBatch]]:
        """The batches of every file in order; rows=(a, b): only the table's rows a to b-1."""
        for k, file in enumerate(self.files):
            if rows is None:
                groups, skip, take = None, 0, None
            else:  # the file's rows in [a, b), and the row groups that hold them
                a, b = max(rows[0] - self.starts[k], 0), min(rows[1], self.starts[k + 1]) - self.starts[k]
                if a >= b:
                    continue
                ends = list(accumulate(self.groups[k]))
                first = bisect.bisect_right(ends, a)
                last = bisect.bisect_left(ends, b)
                groups = list(range(first, last + 1))
                skip = a - (ends[first - 1] if first else 0)
                take = b - a
            try:
                # pre_buffer=False: pyarrow would otherwise load whole row groups ahead of the batches.
                with readable(file) as raw, pq.ParquetFile(raw, pre_buffer=False, memory_map=False) as handle:
                    for batch in handle.iter_batches(batch_size=block_rows, columns=names, row_groups=groups):
                        if take is not None:  # cut to the rows asked for
                            cut = batch.slice(skip, take)
                            skip, take = max(skip - batch.num_rows, 0), take - cut.num_rows
                            batch = cut
                            if not batch.num_rows:
                                if take == 0:
                                    break
                                continue
                        yield file, batch
            except (OSError, pa.ArrowException) as exc:
                if is_url(file) and not isinstance(exc, pa.ArrowException):
                    raise storage_error(file, exc) from None
                raise UserInputError(f"{shown(file)}: not a readable Parquet file ({_first_line(exc)})") from None

    def sample(self, block_rows: int) -> pd.DataFrame:
        """The first non-empty batch of every column (an empty frame of the schema's types when none)."""
        for _, batch in self._batches(None, block_rows):
            if batch.num_rows:
                return batch.to_pandas()
        return self.schema.empty_table().to_pandas()

    def blocks(self, names: tuple[str, ...], block_rows: int,
               rows: tuple[int, int] | None = None) -> Iterator[RawBlock]:
        """The rows (rows=(a, b): only a to b-1) in blocks of at most block_rows, with their row numbers."""
        first = 0 if rows is None else rows[0]
        for _, batch in self._batches(list(names), block_rows, rows):
            if batch.num_rows:
                yield RawBlock(tuple(batch.columns), first)
                first += batch.num_rows

    def where(self, row: int) -> tuple[str, str]:
        """(file, 'row 3'), the row counted from 1 within the file that holds it."""
        k = bisect.bisect_right(self.starts, row) - 1
        file = self.files[k]
        file = self.source if self.kind == "parquet" else shown(file) if is_url(file) else str(Path(file).resolve())
        return file, f"row {row - self.starts[k] + 1}"


def _describe(schema: pa.Schema) -> str:
    return ", ".join(f"{f.name}: {f.type}" for f in schema)


Input = CsvInput | ParquetInput


def _kind(path: Location, name: str, decimal: str) -> Input:
    suffix = Path(name).suffix.lower()
    if suffix == ".csv":
        return CsvInput(path, decimal)
    if suffix in (".parquet", ".pq"):
        return ParquetInput(path, [path], folder=False)
    raise UserInputError(f"{shown(path)}: unsupported file type {suffix or '(none)'!r}; use .csv or .parquet")


def _open_url(url: str, decimal: str) -> Input:
    """DATA at a URL: an object, or a prefix (a folder) whose .parquet objects are one table."""
    fs, path = filesystem(url)
    try:
        info = fs.info(path)
        if info.get("type") != "directory":
            return _kind(url, path, decimal)
        entries = fs.ls(path, detail=True)
    except UserInputError:
        raise
    except Exception as exc:  # noqa: BLE001 - each store raises its own kinds: one line for any of them
        raise storage_error(url, exc) from None
    files = sorted(fs.unstrip_protocol(e["name"]) for e in entries
                   if e.get("type") == "file" and e["name"].lower().endswith(".parquet"))
    if not files:
        raise UserInputError(f"{shown(url)}: the folder holds no .parquet files")
    return ParquetInput(url, files, folder=True)


def open_input(path: Location, decimal: str = ".") -> Input:
    """Open DATA: a .csv file, a .parquet file or a folder of .parquet files, local or at a URL
    (headers only, no rows yet); decimal: a CSV's decimal mark."""
    path = location(path)
    if is_url(path):
        return _open_url(path, decimal)
    if not path.exists():
        raise UserInputError(f"{path}: no such file or folder")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix == ".parquet" and p.is_file())
        if not files:
            raise UserInputError(f"{path}: the folder holds no .parquet files")
        return ParquetInput(path, files, folder=True)
    return _kind(path, path.name, decimal)
