"""Versions on an object store (--artifacts-dir s3://BUCKET/PREFIX, or any fsspec URL), without rename.

Object stores have no atomic rename, so a version is visible when its manifest.json is:

  1. the run uploads every other file of the version under PREFIX/<name>/, beside a marker object
     `.writer-<host>-<pid>-<start>-<random>` that names its owner (tasks/tempfiles.py's rule);
  2. then manifest.json, once, by a conditional create where the store offers one (S3's
     If-None-Match: *): a second writer of the same name fails instead of overwriting;
  3. then PREFIX/latest, a small object holding the name (overwritten by each run, after its manifest).

Readers take only prefixes with a manifest.json; a run killed before step 2 leaves nothing visible.
A later run on the same host removes such a prefix once its owner process is gone (the owner rule of
local temp folders); prefixes of other hosts, or without a marker, are left alone. Concurrent runs
get distinct names (the time to the microsecond and the data's hash); unlike a local folder, whose
lock orders them, two runs overlapping on a store may both measure drift against the same earlier
version.

The read side copies the complete versions a command needs into a temporary local folder (mirror),
where the local readers work unchanged; the store itself is only read.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from tasks.errors import UserInputError
from tasks.faults import crash_point
from tasks.publish.schema import COEFFICIENTS, COMPARISON, DESIGN, LATEST, MANIFEST, Coefficients, Manifest
from tasks.storage import Location, filesystem, is_url, shown, storage_error
from tasks.tempfiles import is_stale, temp_name

WRITER = ".writer-"  # prefix of the owner marker of a version being uploaded
DOCUMENTS = (MANIFEST, COEFFICIENTS, COMPARISON, DESIGN)  # what drift, show, diff and versions read


def _listing(fs, root: str) -> dict[str, set[str]]:
    """version name -> its files' names, for every prefix directly under root (one recursive list)."""
    try:
        paths = fs.find(root) if fs.exists(root) else []
    except Exception as exc:  # noqa: BLE001 - each store raises its own kinds
        raise storage_error(fs.unstrip_protocol(root), exc) from None
    found: dict[str, set[str]] = {}
    base = root.rstrip("/") + "/"
    for path in paths:
        parts = path[len(base):].split("/") if path.startswith(base) else []
        if len(parts) == 2 and not parts[0].startswith("."):
            found.setdefault(parts[0], set()).add(parts[1])
    return found


def complete_versions(fs, root: str) -> dict[str, set[str]]:
    """The versions with a manifest.json, by name (oldest first), with their files."""
    return {name: files for name, files in sorted(_listing(fs, root).items()) if MANIFEST in files}


def mirror(url: str, into: Path, documents_only: bool = False, names: tuple[str, ...] | None = None) -> Path:
    """Copy every complete version under url (those in `names` only, if given) into the local folder
    `into` (their JSON documents only with documents_only), and point into/latest at the store's
    latest; return `into`."""
    fs, root = filesystem(url)
    versions = complete_versions(fs, root)
    into.mkdir(parents=True, exist_ok=True)
    remote, local = [], []
    for name, files in versions.items():
        if names is not None and name not in names:
            continue
        wanted = [f for f in files if not f.startswith(".") and (not documents_only or f in DOCUMENTS)]
        (into / name).mkdir(parents=True, exist_ok=True)
        remote += [f"{root}/{name}/{f}" for f in wanted]
        local += [str(into / name / f) for f in wanted]
    try:
        if remote:
            fs.get(remote, local)
        pointer = f"{root}/{LATEST}"
        newest = fs.cat_file(pointer).decode().strip() if fs.exists(pointer) else None
    except Exception as exc:  # noqa: BLE001 - each store raises its own kinds
        raise storage_error(url, exc) from None
    if newest not in versions:  # no pointer yet, or one written before its version (never by us)
        newest = next(reversed(versions), None)
    if newest is not None and (into / newest).is_dir():
        (into / LATEST).unlink(missing_ok=True)  # a folder mirrored into again, a version at a time
        (into / LATEST).symlink_to(newest)
    return into


@contextmanager
def local_versions(artifacts_dir: Location, versions: tuple[str, ...] = (), documents_only: bool = True,
                   only_named: bool = False) -> Iterator[tuple[Path, list[str], Callable[[str], str]]]:
    """For a command's --artifacts-dir and VERSION arguments, any of them URLs: (the artifacts folder,
    the version arguments, a text translator) as the local readers take them. A URL is mirrored into
    a temporary folder (removed afterwards): --artifacts-dir URL as a whole, a version's URL
    (URL/<name>) with the versions beside it, so that `latest` and drift keep their meaning; the
    translator turns the temporary paths in a text back into the URLs. documents_only: copy each
    version's JSON documents (what show, diff and versions read), not its plots and model files;
    only_named: copy the versions named by URL only (a run's summary of the version it wrote), not
    every version beside them."""
    named = [shown(v).rstrip("/").rsplit("/", 1) for v in versions if is_url(v)]
    places = {shown(artifacts_dir).rstrip("/")} if is_url(artifacts_dir) and not only_named else set()
    places |= {parent for parent, _ in named}
    if not places:
        yield Path(artifacts_dir), list(versions), lambda text: text
        return
    folder = Path(tempfile.mkdtemp(prefix="linreg-versions-")).resolve()
    try:
        subset = tuple(name for _, name in named) if only_named else None
        local = {url: mirror(url, folder / str(k), documents_only, subset) for k, url in enumerate(sorted(places))}
        root = local.get(shown(artifacts_dir).rstrip("/"), folder) if is_url(artifacts_dir) else Path(artifacts_dir)
        args = [str(local[shown(v).rstrip("/").rsplit("/", 1)[0]] / shown(v).rstrip("/").rsplit("/", 1)[1])
                if is_url(v) else v for v in versions]

        def translate(text: str) -> str:
            for url, path in local.items():
                text = text.replace(str(path), url)
            return text

        try:
            yield root, args, translate
        except UserInputError as error:  # its message names the temporary folder: name the URL
            raise UserInputError(translate(str(error))) from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _remove_abandoned(fs, root: str) -> None:
    """Remove the prefixes without a manifest whose writer ran on this host and is gone."""
    for name, files in _listing(fs, root).items():
        if MANIFEST in files:
            continue
        if any(is_stale(f, WRITER) for f in files):
            fs.rm(f"{root}/{name}", recursive=True)


def _create(fs, path: str, data: bytes) -> None:
    """Write path once: a conditional create where the store has one, else write when absent."""
    try:
        fs.pipe_file(path, data, mode="create")
        return
    except TypeError:  # this filesystem has no exclusive create
        pass
    if fs.exists(path):
        raise FileExistsError(path)
    fs.pipe_file(path, data)


def write_version(url: str, sha256: str, files: dict[str, bytes], coefficients: Coefficients,
                  manifest: Manifest) -> tuple[str, Coefficients, tuple[str, ...]]:
    """Publish a version under url as the module docstring says; return its URL, coefficients.json as
    written (with drift) and its files' names."""
    from tasks.publish.drift import drift
    from tasks.publish.writer import _next_time, dumps, version_name

    fs, root = filesystem(url)
    root = root.rstrip("/")
    try:
        _remove_abandoned(fs, root)
        names = list(complete_versions(fs, root))
        since, previous = _previous(url, names, coefficients)
        now = _next_time([Path(n) for n in names[-1:]], datetime.now(timezone.utc))
        doc = coefficients.with_drift(drift(previous, since, coefficients))
        files = files | {COEFFICIENTS: dumps(doc.to_json())}
        name = version_name(sha256, now)
        base = f"{root}/{name}"
        marker = f"{base}/{temp_name(WRITER)}"
        fs.pipe_file(marker, b"")
        fs.pipe({f"{base}/{n}": data for n, data in files.items()})
        crash_point("version-temp")
        _create(fs, f"{base}/{MANIFEST}", dumps(manifest.named(
            name, now.isoformat(), {n: hashlib.sha256(d).hexdigest() for n, d in files.items()}).to_json()))
        crash_point("renamed")
        fs.pipe_file(f"{root}/{LATEST}", (name + "\n").encode())
        fs.rm_file(marker)
    except (FileNotFoundError, PermissionError) as exc:  # the bucket went away, the credentials changed
        raise storage_error(url, exc) from None
    # Anything else (the network, the store's load) propagates: the task's retries write the version
    # again under a new name; what this attempt uploaded stays invisible (no manifest) and is removed
    # by a later run once this process is gone.
    return f"{shown(url).rstrip('/')}/{name}", doc, tuple(sorted([*files, MANIFEST]))


def _previous(url: str, names: list[str], model: Coefficients) -> tuple[str | None, Coefficients | None]:
    """writer.previous_version on the store: the newest sound version of the same model, its
    documents read newest first until one is found (not every version's)."""
    from tasks.publish.reader import read_version

    with tempfile.TemporaryDirectory(prefix="linreg-drift-") as tmp:
        for name in reversed(names):
            docs = read_version(mirror(url, Path(tmp), documents_only=True, names=(name,)) / name)
            if docs.damage is None and docs.coefficients.same_model(model):
                return name, docs.coefficients
    return None, None


def check_writable(option: str, url: str) -> None:
    """Before any work: the bucket (or the URL's top folder) exists and these credentials may list it."""
    fs, root = filesystem(url)
    top = root.strip("/").split("/")[0]
    try:
        fs.ls(top)
    except Exception as exc:  # noqa: BLE001 - each store raises its own kinds
        error = storage_error(url, exc)
        raise UserInputError(f"option {option}: {error}") from None
