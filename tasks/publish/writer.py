"""Artifacts step: write a version directory atomically, point `latest` at it, publish to Prefect."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from tasks.errors import retry_unless_user_error
from tasks.faults import crash_point
from tasks.publish.drift import drift
from tasks.publish.markdown import summary_markdown, table_rows
from tasks.publish.reader import list_versions, nulled, read_version
from tasks.publish.schema import COEFFICIENTS, LATEST, MANIFEST, Coefficients, Manifest
from tasks.storage import is_url, name_of
from tasks.tempfiles import exclusive_lock, remove_stale, temp_name

SUMMARY_KEY = "linreg-summary"
TABLE_KEY = "linreg-coefficients"
VERSION_TIME = "%Y%m%dT%H%M%S%fZ"
VERSION_TEMP = (".tmp-", "")  # prefix and suffix of a version folder being written
LATEST_TEMP = (".latest-", "")  # of the symlink that replaces `latest`


def version_name(sha256: str, now: datetime) -> str:
    """UTC time to the microsecond first (names sort in creation order), then the data's hash prefix."""
    return f"{now.strftime(VERSION_TIME)}-{sha256[:8]}"


def dumps(doc: dict) -> bytes:
    """JSON with float64 round-trip precision (Python writes the shortest exact repr). The builders
    null what does not exist with its reason; a non-finite number they did not foresee becomes null
    here too, never a failed write (every outcome of a run writes its version)."""
    return (json.dumps(nulled(doc), indent=2, allow_nan=False) + "\n").encode()


def previous_version(versions: list[Path], model: Coefficients) -> tuple[str | None, Coefficients | None]:
    """The newest sound one of versions (oldest first) of the same model (target, terms, intercept):
    its name and coefficients."""
    for path in reversed(versions):
        docs = read_version(path)
        if docs.damage is None and docs.coefficients.same_model(model):
            return path.name, docs.coefficients
    return None, None


def _next_time(versions: list[Path], now: datetime) -> datetime:
    """now, or 1 us after the newest version's time if the clock is behind it: names sort in publish order."""
    for path in reversed(versions):
        try:
            newest = datetime.strptime(path.name.split("-")[0], VERSION_TIME).replace(tzinfo=timezone.utc)
        except ValueError:
            continue  # not one of our names
        return max(now, newest + timedelta(microseconds=1))
    return now


def _point_latest(artifacts_dir: Path, name: str) -> None:
    tmp = artifacts_dir / temp_name(*LATEST_TEMP)
    os.symlink(name, tmp)
    os.replace(tmp, artifacts_dir / LATEST)


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "xb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def write_version(artifacts_dir: Path, sha256: str, files: dict[str, bytes], coefficients: Coefficients,
                  manifest: Manifest) -> tuple[Path, Coefficients]:
    """Write a version folder; return its path and coefficients.json as written (with drift).

    The big files go into a hidden temp folder first. Then, under the lock, the newest sound version
    of the same model is read for drift, coefficients.json and manifest.json are written, the folder
    gets its name and `latest` moves: a chain of overlapping runs gets a correct drift chain, and a
    version appears complete or not at all.
    """
    artifacts_dir.mkdir(parents=True, exist_ok=True)
    remove_stale(artifacts_dir, (VERSION_TEMP, LATEST_TEMP))  # what killed runs left; one listdir
    tmp = artifacts_dir / temp_name(*VERSION_TEMP)
    tmp.mkdir()
    try:
        for name, data in files.items():
            _write_synced(tmp / name, data)
        crash_point("version-temp")
        # One run at a time names, renames and points `latest`.
        with exclusive_lock(artifacts_dir / ".lock"):
            versions = list_versions(artifacts_dir)
            since, previous = previous_version(versions, coefficients)
            doc = coefficients.with_drift(drift(previous, since, coefficients))
            files = files | {COEFFICIENTS: dumps(doc.to_json())}
            _write_synced(tmp / COEFFICIENTS, files[COEFFICIENTS])
            now = _next_time(versions, datetime.now(timezone.utc))
            name = version_name(sha256, now)
            _write_synced(tmp / MANIFEST, dumps(manifest.named(
                name, now.isoformat(), {n: hashlib.sha256(d).hexdigest() for n, d in files.items()}).to_json()))
            os.rename(tmp, artifacts_dir / name)  # atomic; the name is newer than every other
            crash_point("renamed")
            _point_latest(artifacts_dir, name)
        return (artifacts_dir / name).resolve(), doc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def publish_to_prefect(markdown: str, rows: list[dict]) -> None:
    """The run's summary and coefficient table, as Prefect artifacts (stable keys, so history shows)."""
    create_markdown_artifact(markdown=markdown, key=SUMMARY_KEY, description="Exact fit vs SGD")
    create_table_artifact(table=rows, key=TABLE_KEY, description="Coefficients, exact and SGD")


def _as_bytes(value: bytes | dict) -> bytes:
    return dumps(value) if isinstance(value, dict) else value


@dataclass(frozen=True)
class WrittenVersion:
    """A version as written: its absolute path (or URL, on an object store), its coefficients.json
    (with drift) and its files' names."""

    path: str
    coefficients: Coefficients
    files: tuple[str, ...] = ()


@task(name="write-artifacts", retries=2, retry_delay_seconds=2, retry_condition_fn=retry_unless_user_error)
def write_artifacts_task(artifacts_dir: str, sha256: str, documents: dict[str, bytes | dict],
                         manifest: Manifest) -> WrittenVersion:
    """Write the version directory, with the drift since the newest version of the same model."""
    files = {name: _as_bytes(value) for name, value in documents.items() if name != COEFFICIENTS}
    coefficients = Coefficients.from_json(documents[COEFFICIENTS])
    if is_url(artifacts_dir):  # an object store: no rename, the manifest is written last (publish/remote.py)
        from tasks.publish.remote import write_version as write_remote

        return WrittenVersion(*write_remote(artifacts_dir, sha256, files, coefficients, manifest))
    path, doc = write_version(Path(artifacts_dir), sha256, files, coefficients, manifest)
    return WrittenVersion(str(path), doc, tuple(sorted(p.name for p in path.iterdir())))


@task(name="publish-summary", retries=2, retry_delay_seconds=2, retry_condition_fn=retry_unless_user_error)
def publish_summary_task(doc: Coefficients, comparison, version_path: str, images: dict[str, bytes],
                         alerts: tuple[str, ...] = (), files: tuple[str, ...] = ()) -> None:
    """Show the run's summary (with its plots inline) and coefficient table in the Prefect UI.

    images: file name -> the PNG bytes written to the version folder (rendered once); alerts: the
    messages of the run's alerts, the summary's first line; files: the version's files (default: listed).
    """
    files = list(files) if files else sorted(p.name for p in Path(version_path).iterdir())
    markdown = summary_markdown(doc, comparison, version_path, doc.drift, images, files, alerts)
    publish_to_prefect(markdown, table_rows(doc, comparison, name_of(version_path), doc.drift))
