"""`linreg predict [VERSION] DATA`: a stored version's predictions for a table, streamed block by block
into a Parquet or CSV file that appears only when complete. The fit is never recomputed."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from flows.commands.show import sound_version
from tasks.errors import UserInputError
from tasks.exact.predict import (MODELS, StoredModel, check_columns, critical_t, kept_names, level_codes,
                                 output_columns, predict_block, stored_model)
from tasks.ingest.cells import check_block
from tasks.ingest.load import RawBlock, open_input
from tasks.kernels.table import BLOCK_ROWS
from tasks.publish.reader import hash_problem, resolve_version
from tasks.publish.schema import DESIGN, SGD_MODEL, Coefficients, DesignRecord, SchemaError
from tasks.storage import Location, is_url, location, name_of
from tasks.tempfiles import remove_stale, temp_name
from tasks.training.model_file import load_sgd_model
from tasks.wording import counted

OUTPUT_KINDS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}
OUT_TEMP = (".predict-", ".tmp")  # the output being written, in the output's folder


def _output(data: Location, out: Path | None) -> tuple[Path, str]:
    """The absolute output path (default: DATA's name + .predictions.parquet, here) and its kind."""
    stem = Path(name_of(data)).stem if is_url(data) else data.resolve().stem  # resolve: DATA may be "."
    out = Path(f"{stem}.predictions.parquet") if out is None else out
    kind = OUTPUT_KINDS.get(out.suffix.lower())
    if kind is None:
        raise UserInputError(f"option --out: {out} has extension {out.suffix or '(none)'!r}; use .parquet, .pq or .csv")
    if not out.parent.is_dir():
        raise UserInputError(f"option --out: {out}: {out.parent} is not an existing folder")
    out = out.parent.resolve() / out.name  # the file itself is replaced, even when it is a link
    if out.is_dir():
        raise UserInputError(f"option --out: {out} is a folder")
    if out.exists() and not is_url(data) and data.exists() and os.path.samefile(out, data):
        raise UserInputError(f"option --out: {out} is the input file")
    return out, kind


def _sound_bytes(version: Path, files: dict, name: str) -> bytes:
    """The bytes of version/name, after checking them against their sha256 in manifest.json."""
    try:
        raw = (version / name).read_bytes()
    except OSError as exc:
        raise UserInputError(f"{version}: damaged version ({name} unreadable: {exc.strerror})") from None
    problem = hash_problem(files, name, raw)
    if problem:
        raise UserInputError(f"{version}: damaged version ({problem})")
    return raw


def load_model(version: Path) -> tuple[StoredModel, Coefficients]:
    """The version's model and its coefficients.json; UserInputError when it is damaged or too old."""
    docs = sound_version(version)
    if not (version / DESIGN).exists():
        raise UserInputError(f"{version}: no {DESIGN}: this version was written before `linreg predict` existed; "
                             "`linreg run` makes one that can predict")
    files = docs.manifest.files
    try:
        design = DesignRecord.from_json(json.loads(_sound_bytes(version, files, DESIGN)))
    except (ValueError, SchemaError) as exc:  # its sha256 matched: written so, by another linreg-flow
        raise UserInputError(f"{version}: damaged version ({exc})") from None
    state = load_sgd_model(version / SGD_MODEL, _sound_bytes(version, files, SGD_MODEL))
    return stored_model(design, docs.coefficients, state), docs.coefficients


@contextmanager
def _atomic_writer(out: Path, kind: str, empty: pa.Schema) -> Iterator[Callable[[pa.Table], None]]:
    """A write(table) function that appends a block to a temp file beside out (its schema: the first
    block's, or `empty` when there is none); out is replaced by it when the block ends without an
    error, and the temp file removed on any error."""
    remove_stale(out.parent, (OUT_TEMP,))  # what killed predictions left
    tmp = out.parent / temp_name(*OUT_TEMP)
    writers: list = []

    def open_writer(schema: pa.Schema):
        try:
            # No dictionary encoding: predictions are distinct floats, and trying it costs 4x the write time.
            writers.append(pq.ParquetWriter(tmp, schema, use_dictionary=False) if kind == "parquet"
                           else pacsv.CSVWriter(tmp, schema))
        except OSError as exc:
            raise UserInputError(f"option --out: cannot write to {out.parent} ({exc})") from None

    def write(table: pa.Table) -> None:
        if not writers:
            open_writer(table.schema)
        writers[0].write_table(table.cast(writers[0].schema) if kind == "parquet" else table)

    try:
        yield write
        if not writers:
            open_writer(empty)
        writers[0].close()
        os.replace(tmp, out)
    except BaseException:
        for writer in writers:
            try:
                writer.close()
            except Exception:  # noqa: BLE001 - the first error is the one to report
                pass
        tmp.unlink(missing_ok=True)
        raise


class _Carried:
    """The input's own columns as Arrow arrays of one type each, block after block: a Parquet input's
    own types; a CSV's as pandas reads its first block (a column empty there: text)."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names, self.types = names, None

    def arrays(self, block, where) -> list[pa.Array]:
        arrays = []
        for j, column in enumerate(block.columns):
            if isinstance(column, (pa.Array, pa.ChunkedArray)):
                arrays.append(column)
                continue
            want = None if self.types is None else self.types[j]
            if want == pa.large_string():
                arrays.append(pa.array([None if pd.isna(v) else str(v) for v in column], type=want))
                continue
            try:
                arrays.append(pa.Array.from_pandas(column, type=want))
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
                file, at = where(block.first_row)
                raise UserInputError(
                    f"{file}: column {self.names[j]!r}: the block from {at} does not read as {want} (the type of "
                    "its first rows); give the column one type, or predict from a Parquet file") from None
        if self.types is None:
            self.types = [pa.large_string() if a.type == pa.null() else a.type for a in arrays]
            arrays = [a.cast(t) if a.type != t else a for a, t in zip(arrays, self.types)]
        return arrays


def predict_command(artifacts_dir: Path, version: str, data: Location, *, out: Path | None, model: str,
                    alpha: float | None) -> Path:
    """Write the predictions of VERSION for DATA, every input column kept and the prediction's own
    columns added; return the output file's absolute path."""
    if model not in MODELS:
        raise UserInputError(f"option --model: expected exact or sgd, got {model!r}")
    if alpha is not None and not 0 < alpha < 1:
        raise UserInputError(f"option --alpha: must lie strictly between 0 and 1, got {alpha!r}")
    data = location(data)
    out_path, kind = _output(data, out)
    path = resolve_version(artifacts_dir, version)
    stored, coefficients = load_model(path)
    alpha = coefficients.exact["alpha"] if alpha is None else alpha
    source = open_input(data)
    check_columns(source.source, source.header, stored.features)
    t = critical_t(stored, alpha)
    added = output_columns(model)
    names, renamed = kept_names(source.header, added)
    for old, new in renamed.items():
        print(f"predict: input column {old!r} is written as {new!r} ({old!r} is the prediction's own)",
              file=sys.stderr)
    at = [source.header.index(f) for f in stored.features]
    carried = _Carried(source.header)
    # The schema of an input without rows: its columns as text, the prediction's as predict_block writes them.
    empty = pa.schema([(n, pa.large_string()) for n in names]
                      + [(n, pa.bool_() if n == "extrapolated" else pa.float64()) for n in added])
    rows = outside = 0
    with _atomic_writer(out_path, kind, empty) as write:
        for block in source.blocks(source.header, BLOCK_ROWS):
            features = RawBlock(tuple(block.columns[j] for j in at), block.first_row)
            columns = check_block(features, stored.features, source.where, text=stored.text)
            columns = level_codes(stored, columns, block.first_row, source.where)
            predicted = predict_block(stored, columns, t, model)
            write(pa.table(dict(zip(names, carried.arrays(block, source.where))) | predicted))
            rows, outside = rows + block.rows, outside + int(predicted["extrapolated"].sum())
    if outside:
        print(f"predict: warning: {outside} of {counted(rows, 'row')} lie outside the range the model was fitted on "
              "(column extrapolated)", file=sys.stderr)
    fit = "exact fit" if model == "exact" else "SGD model"
    print(f"predict: {counted(rows, 'row')} from {path.name} ({fit}, alpha {alpha:g}) -> {out_path}", file=sys.stderr)
    return out_path
