"""Reading version folders: which there are, and each one's JSON documents checked against its
manifest; and plain JSON values for those documents. No Prefect or torch here: `linreg show`,
`diff` and `versions` start in a blink."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tasks.errors import UserInputError
from tasks.publish.schema import (COEFFICIENTS, COMPARISON, LATEST, MANIFEST, Coefficients, ComparisonRecord, Manifest,
                                  SchemaError)

# The environment variable that is the default of --artifacts-dir for every verb.
ARTIFACTS_ENV = "LINREG_ARTIFACTS_DIR"


def jsonable(value: object) -> object:
    """Plain JSON values: numpy scalars to Python, non-finite floats to null (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


REASON = "_reason"  # suffix of the key that says why its neighbour is null
PARAMETER_KEYS = {"intercept", "coefficients"}  # a per-parameter pair keeps its contract shape


def _kind(value: float) -> str:
    return "NaN" if math.isnan(value) else ("+inf" if value > 0 else "-inf")


def _null_walk(value: object, reason: str) -> tuple[object, str | None]:
    """(value with non-finite floats as None, the kind of the first one found or None)."""
    if isinstance(value, dict):
        return _null_dict(value, reason)
    if isinstance(value, (list, tuple, np.ndarray)):
        found, out = None, []
        for item in value:
            clean, kind = _null_walk(item, reason)
            out.append(clean)
            found = found or kind
        return out, found
    if isinstance(value, (float, np.floating)) and not math.isfinite(value):
        return None, _kind(float(value))
    return jsonable(value), None


def _null_dict(doc: dict, reason: str) -> tuple[dict, str | None]:
    out, found = {}, None
    for key, value in doc.items():
        clean, kind = _null_walk(value, reason)
        out[str(key)] = clean
        if kind is not None:
            if set(doc) <= PARAMETER_KEYS | {k + REASON for k in PARAMETER_KEYS}:
                found = found or kind  # the parent names the pair's reason
            elif f"{key}{REASON}" not in doc:
                out[f"{key}{REASON}"] = f"{reason} (the computed value was {kind})"
    return out, found


def nulled(doc: dict, reasons: dict[str, str] | None = None,
           default: str = "not a finite number") -> dict:
    """doc as plain JSON values where a quantity that does not exist is null with the reason beside it:
    each non-finite float becomes None and its key K gains a neighbour K_reason (unless the builder
    wrote one), from reasons[top-level key] or default. {"intercept", "coefficients"} pairs keep their
    shape: their reason goes beside the pair (e.g. t_values_reason). JSON has no NaN or Infinity."""
    reasons = reasons or {}
    out = {}
    for key, value in doc.items():
        clean, kind = _null_walk({key: value}, reasons.get(str(key), default))
        out.update(clean)
    return out


def list_versions(artifacts_dir: Path) -> list[Path]:
    """Version folders, oldest first (hidden temp folders and `latest` are not versions)."""
    if not artifacts_dir.is_dir():
        return []
    return sorted(p for p in artifacts_dir.iterdir()
                  if p.is_dir() and not p.is_symlink() and not p.name.startswith("."))


@dataclass(frozen=True)
class VersionDocs:
    """The JSON documents of one version folder; `damage` says why it cannot be trusted (None: sound,
    and then every document is there)."""

    manifest: Manifest | None
    coefficients: Coefficients | None
    comparison: ComparisonRecord | None
    damage: str | None


def _load(file: Path) -> tuple[object, bytes, str | None]:
    """The JSON value in file, its bytes, and what is wrong with it (None: nothing)."""
    try:
        raw = file.read_bytes()
    except OSError as exc:
        return None, b"", f"{file.name} unreadable ({exc.strerror})"
    try:
        return json.loads(raw), raw, None
    except ValueError as exc:
        return None, raw, f"{file.name} is not valid JSON ({exc})"


def _parse(kind, name: str, doc: object) -> tuple[object, str | None]:
    try:
        return kind.from_json(doc), None
    except SchemaError as exc:
        return None, str(exc)


def hash_problem(recorded: dict, name: str, raw: bytes) -> str | None:
    """What is wrong with a version file's bytes against manifest.json's sha256s (None: nothing)."""
    if name not in recorded:
        return f"manifest.json lists no sha256 for {name}"
    if recorded[name] != hashlib.sha256(raw).hexdigest():
        return f"{name} does not match its sha256 in manifest.json"
    return None


def read_version(path: Path) -> VersionDocs:
    """Read manifest, coefficients and comparison; each must parse as its document and match its sha256
    in the manifest."""
    doc, _, damage = _load(path / MANIFEST)
    manifest, problem = _parse(Manifest, MANIFEST, doc) if damage is None else (None, None)
    damage = damage or problem
    recorded = manifest.files if manifest is not None else {}
    docs = {}
    for kind, name in ((Coefficients, COEFFICIENTS), (ComparisonRecord, COMPARISON)):
        doc, raw, problem = _load(path / name)
        docs[name], invalid = _parse(kind, name, doc) if problem is None else (None, None)
        damage = damage or problem or hash_problem(recorded, name, raw) or invalid
    if damage:
        return VersionDocs(None, None, None, damage)
    return VersionDocs(manifest, docs[COEFFICIENTS], docs[COMPARISON], None)


def resolve_version(artifacts_dir: Path, version: str) -> Path:
    """A version folder from its name, a unique prefix of one, a path to it, or `latest`;
    UserInputError when absent or ambiguous."""
    candidates = [Path(version), artifacts_dir / version]
    for path in candidates:
        if path.is_dir() and (path / MANIFEST).exists():
            return path.resolve()
    if version == LATEST:
        raise UserInputError(f"option --artifacts-dir: {artifacts_dir.resolve()} holds no version yet "
                             f"(--artifacts-dir, or {ARTIFACTS_ENV}, names another folder)")
    matches = [p for p in list_versions(artifacts_dir) if p.name.startswith(version)] if version else []
    if len(matches) == 1:
        return matches[0].resolve()
    if matches:
        names = ", ".join(p.name for p in matches[:4]) + (", ..." if len(matches) > 4 else "")
        raise UserInputError(f"version {version!r}: {len(matches)} versions start with it ({names}); "
                             "give more of the name")
    raise UserInputError(f"version {version!r}: no such version folder (looked in {artifacts_dir.resolve()})")
