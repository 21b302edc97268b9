"""Store step: write the validated table once, as Parquet named by the SHA-256 of its content."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from prefect import task

from tasks.errors import retry_unless_user_error
from tasks.faults import crash_point
from tasks.tempfiles import remove_stale, temp_name

TEMP = (".tmp-", ".parquet")  # prefix and suffix of a temp file in validated/


@dataclass(frozen=True)
class StoredData:
    """Where the validated table lives: path of validated/<sha256>.parquet, its hash, row count."""

    path: str
    sha256: str
    rows: int


def content_sha256(frame: pd.DataFrame) -> str:
    """SHA-256 of the table's content: for each column, its name, then its float64 values (little-endian).

    Independent of file format, encoding and Parquet writer version: same data, same hash.
    """
    digest = hashlib.sha256()
    for name in frame.columns:
        digest.update(str(name).encode("utf-8") + b"\x00")
        digest.update(np.ascontiguousarray(frame[name].to_numpy(dtype="<f8")).tobytes())
    return digest.hexdigest()


def write_parquet_once(frame: pd.DataFrame, data_dir: Path, source: str) -> StoredData:
    """Write frame to data_dir/validated/<sha256>.parquet unless it is there.

    Written once and never torn: a fsynced temp file is hard-linked to the final name, which fails
    when a concurrent writer of the same content got there first (then its file stays, ours goes).
    """
    sha = content_sha256(frame)
    folder = Path(data_dir) / "validated"
    target = folder / f"{sha}.parquet"
    remove_stale(folder, (TEMP,))  # what a killed run left; one listdir
    if not target.exists():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / temp_name(*TEMP)
        try:
            with open(tmp, "xb") as handle:
                pq.write_table(_with_provenance(frame, source, sha), handle)
                handle.flush()
                os.fsync(handle.fileno())
            crash_point("stored-temp")
            try:
                os.link(tmp, target)  # atomic, and never replaces an existing file
            except FileExistsError:
                pass  # the same content, written by someone else
        finally:
            tmp.unlink(missing_ok=True)
    return StoredData(str(target.resolve()), sha, len(frame))


def _with_provenance(frame: pd.DataFrame, source: str, sha: str) -> pa.Table:
    """The table with where it came from in its schema metadata."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    provenance = {
        "source": source,
        "sha256": sha,
        "rows": len(frame),
        "columns": [str(c) for c in frame.columns],
        "written_at": datetime.now(timezone.utc).isoformat(),
        "writer": "linreg-flow",
    }
    meta = dict(table.schema.metadata or {})
    meta[b"linreg_flow.provenance"] = json.dumps(provenance).encode()
    return table.replace_schema_metadata(meta)


@task(name="store-data", retries=2, retry_delay_seconds=2, retry_condition_fn=retry_unless_user_error)
def store_data(frame: pd.DataFrame, data_dir: str, source: str) -> StoredData:
    """Write the validated table to the data folder as content-addressed Parquet."""
    return write_parquet_once(frame, Path(data_dir), source)
