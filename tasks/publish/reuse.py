"""Nothing computed twice: a run whose data, model and options equal an earlier version's reuses that
version's exact fit and training (`run --refresh` recomputes).

The key of a run's fits is the SHA-256 of its data's content hash (the stored table's name), the
model (ModelSpec), the training (TrainConfig), the options the fits read (--rtol as resolved,
--cov, --alpha) and this code's version: never a data frame, nor where the data came from. Every
version records its key in manifest.json (`fit_key`). The exact fit and the training are Prefect
tasks whose cache policy is that key (results persisted in Prefect's result storage,
$PREFECT_HOME/storage unless configured otherwise): a run finds the newest sound version of its
artifacts folder with its key, and when there is one it takes the cached results (Prefect's
"Cached" state) and names that version in its manifest's `reused_from`; when there is none, or
with --refresh, the fits run (and refresh the cache). A cache that lost the results (another
PREFECT_HOME) only means the fits run again: `reused_from` then stays absent.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

from tasks.config import RunConfig
from tasks.publish.reader import list_versions
from tasks.publish.schema import MANIFEST
from tasks.storage import Location, filesystem, is_url


def fit_key(sha256: str, config: RunConfig) -> str:
    """The key of a run's exact fit and training (see the module docstring)."""
    from tasks.publish.documents import environment

    doc = {"data": sha256, "model": config.model.model_dump(mode="json"),
           "train": config.train.model_dump(mode="json"), "rtol": config.converged_rtol, "cov": config.cov,
           "alpha": config.alpha, "code": environment().get("packages", {}).get("linreg-flow")}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def _matches(path: Path, key: str) -> bool:
    from tasks.publish.reader import read_version

    try:
        recorded = json.loads((path / MANIFEST).read_bytes()).get("fit_key")
    except (OSError, ValueError, AttributeError):
        return False
    return recorded == key and read_version(path).damage is None


def reusable_version(artifacts_dir: Location, key: str) -> str | None:
    """The newest sound version in artifacts_dir whose fits have this key, or None. On an object
    store the versions' documents are read newest first until one matches (a nightly run on unchanged
    data reads one version's), not every version's."""
    if not is_url(artifacts_dir):
        return next((p.name for p in reversed(list_versions(Path(artifacts_dir))) if _matches(p, key)), None)
    from tasks.publish.remote import complete_versions, mirror

    fs, root = filesystem(artifacts_dir)
    with tempfile.TemporaryDirectory(prefix="linreg-reuse-") as tmp:
        for name in reversed(list(complete_versions(fs, root.rstrip("/")))):
            if _matches(mirror(artifacts_dir, Path(tmp), documents_only=True, names=(name,)) / name, key):
                return name
    return None

