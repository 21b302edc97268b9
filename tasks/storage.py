"""Where data lives: local paths, and URLs of object stores and other filesystems (fsspec).

DATA (and, where a verb supports them, other locations) may be a URL: s3://BUCKET/KEY, gs://, az://,
abfs://, http(s)://, memory:// or any protocol fsspec knows (its package installed: s3fs for s3://).
Credentials and endpoints come from each ecosystem's usual settings (for S3: AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, AWS_PROFILE, ~/.aws/...), never from this project, and are
never written or printed: a location is shown and recorded without its user:password@ part and
without its query string (where signed URLs carry their tokens), and error messages are scrubbed of
the secrets in the environment. file:///path is the local path /path.
"""

from __future__ import annotations

import os
import re
from contextlib import nullcontext
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from tasks.errors import UserInputError

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# Environment variables whose values must never reach a message.
_SECRETS = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID", "AZURE_STORAGE_KEY",
            "AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_SAS_TOKEN", "AZURE_CLIENT_SECRET",
            "GOOGLE_APPLICATION_CREDENTIALS_JSON")

Location = str | Path  # a URL (str) or a local path


def is_url(value: object) -> bool:
    """A URL of a filesystem other than the local one (file:// is local)."""
    if isinstance(value, Path) or not isinstance(value, str):
        return False
    match = _SCHEME.match(value)
    return match is not None and match.group(1).lower() != "file"


def location(value: str | Path) -> Location:
    """A command line's location: a URL stays a string; file:///p and plain paths become a Path."""
    if isinstance(value, Path):
        return value
    if is_url(value):
        return value
    match = _SCHEME.match(value)
    if match is not None:  # file://
        parts = urlsplit(value)
        if parts.netloc not in ("", "localhost"):
            raise UserInputError(f"{shown(value)}: a file:// URL names a local path (file:///path), not a host")
        return Path(parts.path)
    return Path(value)


def shown(url: str | Path) -> str:
    """The location as it may be printed and recorded: no user:password@, no query string or fragment."""
    if not isinstance(url, str) or not _SCHEME.match(url):
        return str(url)
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def scrubbed(text: str) -> str:
    """text with every secret of the environment replaced by ***."""
    for name in _SECRETS:
        secret = os.environ.get(name)
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return scrubbed(text.splitlines()[0])


def storage_error(url: str, exc: BaseException) -> UserInputError:
    """One line for what went wrong reaching url: a missing bucket or object, refused credentials,
    an unreachable endpoint, a protocol without its package."""
    where = shown(url)
    if isinstance(exc, ImportError):
        return UserInputError(f"{where}: this kind of URL needs a package that is not installed ({_first_line(exc)})")
    if isinstance(exc, FileNotFoundError):
        return UserInputError(f"{where}: no such bucket, object or folder ({_first_line(exc)})")
    if isinstance(exc, PermissionError):
        return UserInputError(f"{where}: access refused: check the credentials ({_first_line(exc)})")
    return UserInputError(f"{where}: cannot reach the storage ({type(exc).__name__}: {_first_line(exc)})")


def filesystem(url: str):
    """(fsspec filesystem, path within it) of a URL; a bad URL or a missing package: exit 2."""
    try:
        from fsspec.core import url_to_fs

        return url_to_fs(url)
    except (ImportError, ValueError) as exc:
        raise storage_error(url, exc) from None


def open_binary(place: Location):
    """A binary file object of a local path or a URL (fsspec: read in blocks, seekable)."""
    if not is_url(place):
        return open(place, "rb")
    fs, path = filesystem(place)
    try:
        return fs.open(path, "rb")
    except Exception as exc:  # noqa: BLE001 - each store raises its own kinds: one line for any of them
        raise storage_error(place, exc) from None


def readable(place: Location):
    """What pyarrow and pandas read, as a context manager: a local file by its path (they open it
    natively), a URL's object as a binary file."""
    return open_binary(place) if is_url(place) else nullcontext(place)


def exists(place: Location) -> bool:
    if not is_url(place):
        return Path(place).exists()
    fs, path = filesystem(place)
    try:
        return fs.exists(path)
    except Exception as exc:  # noqa: BLE001
        raise storage_error(place, exc) from None


def upload(local: Path | str, place: str) -> None:
    """Copy a local file to a URL (one object: it appears whole or not at all)."""
    fs, path = filesystem(place)
    try:
        fs.put_file(str(local), path)
    except Exception as exc:  # noqa: BLE001
        raise storage_error(place, exc) from None


def join(base: Location, *names: str) -> Location:
    """base / names, for a URL too."""
    if isinstance(base, Path):
        return base.joinpath(*names)
    return "/".join([base.rstrip("/"), *names])


def name_of(place: Location) -> str:
    """The last part of a location's path."""
    return place.name if isinstance(place, Path) else place.rstrip("/").rsplit("/", 1)[-1]
