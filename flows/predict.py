"""`linreg predict [VERSION] DATA`: a stored version's predictions for a table, streamed block by block
into a Parquet or CSV file that appears only when complete. The fit is never recomputed."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from flows.show import resolve_version
from tasks.versions import hash_problem, read_version
from tasks.errors import UserInputError
from tasks.kernels.table import BLOCK_ROWS
from tasks.load import open_input
from tasks.predict import (MODELS, StoredModel, check_columns, critical_t, extrapolated, output_columns,
                           predict_block, stored_model)
from tasks.sgd_model import load_sgd_model
from tasks.tempfiles import remove_stale, temp_name
from tasks.validate import check_block
from tasks.wording import counted

DESIGN, SGD_MODEL = "design.json", "sgd_model.pt"
OUTPUT_KINDS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}
OUT_TEMP = (".predict-", ".tmp")  # the output being written, in the output's folder


def _output(data: Path, out: Path | None) -> tuple[Path, str]:
    """The absolute output path (default: DATA's name + .predictions.parquet, here) and its kind."""
    out = Path(f"{data.resolve().stem}.predictions.parquet") if out is None else out  # resolve: DATA may be "."
    kind = OUTPUT_KINDS.get(out.suffix.lower())
    if kind is None:
        raise UserInputError(f"option --out: {out} has extension {out.suffix or '(none)'!r}; use .parquet, .pq or .csv")
    if not out.parent.is_dir():
        raise UserInputError(f"option --out: {out}: {out.parent} is not an existing folder")
    out = out.parent.resolve() / out.name  # the file itself is replaced, even when it is a link
    if out.is_dir():
        raise UserInputError(f"option --out: {out} is a folder")
    if out.exists() and data.exists() and os.path.samefile(out, data):
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


def load_model(version: Path) -> tuple[StoredModel, dict]:
    """The version's model and its coefficients.json; UserInputError when it is damaged or too old."""
    docs = read_version(version)
    if docs.damage:
        raise UserInputError(f"{version}: damaged version ({docs.damage})")
    if not (version / DESIGN).exists():
        raise UserInputError(f"{version}: no {DESIGN}: this version was written before `linreg predict` existed; "
                             "`linreg run` makes one that can predict")
    files = docs.manifest["files"]
    design = json.loads(_sound_bytes(version, files, DESIGN))
    state = load_sgd_model(version / SGD_MODEL, _sound_bytes(version, files, SGD_MODEL))
    return stored_model(design, docs.coefficients, state), docs.coefficients


@contextmanager
def _atomic_writer(out: Path, kind: str, names: tuple[str, ...]) -> Iterator[Callable[[dict], None]]:
    """A write(columns) function that appends a block to a temp file beside out; out is replaced by
    it when the block ends without an error, and the temp file removed on any error."""
    remove_stale(out.parent, (OUT_TEMP,))  # what killed predictions left
    tmp = out.parent / temp_name(*OUT_TEMP)
    schema = pa.schema([(name, pa.float64()) for name in names])
    try:
        # No dictionary encoding: predictions are distinct floats, and trying it costs 4x the write time.
        writer = (pq.ParquetWriter(tmp, schema, use_dictionary=False) if kind == "parquet"
                  else pacsv.CSVWriter(tmp, schema))
    except OSError as exc:
        raise UserInputError(f"option --out: cannot write to {out.parent} ({exc})") from None
    try:
        with writer:
            yield lambda columns: writer.write_table(pa.table(columns, schema=schema))
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def predict_command(artifacts_dir: Path, version: str, data: Path, *, out: Path | None, model: str,
                    alpha: float | None) -> Path:
    """Write the predictions of VERSION for DATA; return the output file's absolute path."""
    if model not in MODELS:
        raise UserInputError(f"option --model: expected exact or sgd, got {model!r}")
    if alpha is not None and not 0 < alpha < 1:
        raise UserInputError(f"option --alpha: must lie strictly between 0 and 1, got {alpha!r}")
    data = Path(data)
    out_path, kind = _output(data, out)
    path = resolve_version(artifacts_dir, version)
    stored, coefficients = load_model(path)
    alpha = coefficients["exact"]["alpha"] if alpha is None else alpha
    source = open_input(data)
    check_columns(source.source, source.header, stored.features)
    t = critical_t(stored, alpha)
    rows = outside = 0
    with _atomic_writer(out_path, kind, output_columns(stored, model)) as write:
        for block in source.blocks(stored.features, BLOCK_ROWS):
            columns = check_block(block, stored.features, source.where)
            write(predict_block(stored, columns, t, model))
            rows, outside = rows + block.rows, outside + extrapolated(stored, columns)
    if outside:
        print(f"predict: warning: {outside} of {counted(rows, 'row')} lie outside the range the model was fitted on "
              "(extrapolated)", file=sys.stderr)
    fit = "exact fit" if model == "exact" else "SGD model"
    print(f"predict: {counted(rows, 'row')} from {path.name} ({fit}, alpha {alpha:g}) -> {out_path}", file=sys.stderr)
    return out_path
