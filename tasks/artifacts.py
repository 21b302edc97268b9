"""Artifacts step: write a version directory atomically, point `latest` at it, publish to Prefect."""

from __future__ import annotations

import base64
import fcntl
import hashlib
import io
import json
import os
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from matplotlib.figure import Figure
from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from tasks.errors import retry_unless_user_error
from tasks.summary import same_model, summary_markdown, table_rows

LATEST = "latest"
SUMMARY_KEY = "linreg-summary"
TABLE_KEY = "linreg-coefficients"


def version_name(sha256: str, now: datetime) -> str:
    """UTC time to the microsecond first (names sort in creation order), then the data's hash prefix."""
    return f"{now:%Y%m%dT%H%M%S%fZ}-{sha256[:8]}"


def dumps(doc: dict) -> bytes:
    """JSON with float64 round-trip precision (Python writes the shortest exact repr)."""
    return (json.dumps(doc, indent=2, allow_nan=False) + "\n").encode()


def png_bytes(fig: Figure, dpi: float | None = None) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi or fig.dpi)
    return buffer.getvalue()


def data_uri(fig: Figure, dpi: float = 60) -> str:
    """The figure as a small PNG data URI (Prefect's image artifact takes only a URL, and a
    markdown artifact with an inline image needs no file server); ~20 KB at 60 dpi."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(fig, dpi)).decode("ascii")


@contextmanager
def _locked(folder: Path):
    """An exclusive lock on folder/.lock, so concurrent runs update `latest` one at a time."""
    with open(folder / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def list_versions(artifacts_dir: Path) -> list[Path]:
    """Complete versions, oldest first (hidden temp folders and `latest` are not versions)."""
    if not artifacts_dir.is_dir():
        return []
    return sorted(p for p in artifacts_dir.iterdir()
                  if p.is_dir() and not p.is_symlink() and not p.name.startswith("."))


def _point_latest(artifacts_dir: Path) -> None:
    versions = list_versions(artifacts_dir)
    if not versions:
        return
    link = artifacts_dir / LATEST
    tmp = artifacts_dir / f".latest-{uuid.uuid4().hex}"
    os.symlink(versions[-1].name, tmp)
    os.replace(tmp, link)


def write_version(artifacts_dir: Path, sha256: str, files: dict[str, bytes], manifest: dict) -> Path:
    """Write files + manifest.json into a hidden temp folder, then rename it to its version name.

    The version appears complete or not at all; a name taken by a concurrent run is never reused.
    """
    artifacts_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=artifacts_dir))
    try:
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; a version is as readable as any folder
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        manifest = dict(manifest, files={n: hashlib.sha256(d).hexdigest() for n, d in files.items()})
        while True:
            now = datetime.now(timezone.utc)
            name = version_name(sha256, now)
            doc = dict(manifest, version=name, created_at=now.isoformat())
            (tmp / "manifest.json").write_bytes(dumps(doc))
            _fsync_folder(tmp)
            try:
                os.rename(tmp, artifacts_dir / name)  # atomic; fails if the name exists
                break
            except OSError:
                if not (artifacts_dir / name).exists():
                    raise
        with _locked(artifacts_dir):
            _point_latest(artifacts_dir)
        return (artifacts_dir / name).resolve()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _fsync_folder(folder: Path) -> None:
    for path in folder.iterdir():
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())


def previous_version(artifacts_dir: Path, target: str, terms: list[str], intercept: bool) -> tuple[str | None, dict | None]:
    """The newest complete version of the same model (target, terms, intercept), if any."""
    model = {"target": target, "terms": list(terms), "intercept": intercept}
    for path in reversed(list_versions(artifacts_dir)):
        doc = read_version(path)["coefficients"]
        if same_model(doc, model):
            return path.name, doc
    return None, None


def publish_to_prefect(markdown: str, rows: list[dict]) -> None:
    """The run's summary and coefficient table, as Prefect artifacts (stable keys, so history shows)."""
    create_markdown_artifact(markdown=markdown, key=SUMMARY_KEY, description="Exact fit vs SGD")
    create_table_artifact(table=rows, key=TABLE_KEY, description="Coefficients, exact and SGD")


@task(name="write-artifacts", retries=2, retry_delay_seconds=2, retry_condition_fn=retry_unless_user_error)
def write_artifacts(artifacts_dir: str, sha256: str, documents: dict[str, bytes | dict | Figure],
                    manifest: dict) -> str:
    """Write the version directory and return its absolute path."""
    files = {}
    for name, value in documents.items():
        if isinstance(value, Figure):
            files[name] = png_bytes(value)
        elif isinstance(value, dict):
            files[name] = dumps(value)
        else:
            files[name] = value
    return str(write_version(Path(artifacts_dir), sha256, files, manifest))


@task(name="find-previous-version", retries=2, retry_delay_seconds=2,
      retry_condition_fn=retry_unless_user_error)
def find_previous_version(artifacts_dir: str, target: str, terms: list[str], intercept: bool) -> tuple[str | None, dict | None]:
    """Find the last version of the same model, for drift."""
    return previous_version(Path(artifacts_dir), target, terms, intercept)


@task(name="publish-summary", retries=2, retry_delay_seconds=2, retry_condition_fn=retry_unless_user_error)
def publish_summary(doc: dict, comparison, version_path: str, figures: dict[str, Figure]) -> None:
    """Show the run's summary (with its plots inline) and coefficient table in the Prefect UI."""
    images = {name.removesuffix(".png"): data_uri(fig) for name, fig in figures.items()}
    files = sorted(p.name for p in Path(version_path).iterdir())
    markdown = summary_markdown(doc, comparison, version_path, doc["drift"], images, files)
    publish_to_prefect(markdown, table_rows(doc, comparison, Path(version_path).name, doc["drift"]))


def read_version(path: Path) -> dict:
    """The key figures of one version folder (manifest, coefficients, comparison)."""
    docs = {}
    for name in ("manifest", "coefficients", "comparison"):
        try:
            docs[name] = json.loads((path / f"{name}.json").read_text())
        except (OSError, ValueError):
            docs[name] = {}
    return docs
