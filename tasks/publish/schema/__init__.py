"""The layout of a version folder, in one place: its file names, the format tag of each JSON document
and each document as a frozen dataclass with to_json / from_json.

Writers build a document and call to_json; readers call from_json, which refuses (SchemaError) what
is not the document its tag names, and reads a document written before tags existed (no "format") with
the defaults readers always applied: alpha 0.05, df_resid = dof, an absent field None. A tag of a
newer format than this code knows is refused, never guessed at. No Prefect, torch or numpy here.
"""

from __future__ import annotations

from typing import Any

# The files of a version folder (CONTRACT.md, "A version directory").
COEFFICIENTS = "coefficients.json"
COMPARISON = "comparison.json"
MANIFEST = "manifest.json"
DESIGN = "design.json"
LOSS_HISTORY = "loss_history.parquet"
SGD_MODEL = "sgd_model.pt"
FIT_PLOT = "fit.png"
LOSS_PLOT = "loss.png"
LATEST = "latest"  # the link beside the versions that names the newest complete one

FORMATS = {
    COEFFICIENTS: "linreg-flow/coefficients/1",
    COMPARISON: "linreg-flow/comparison/1",
    MANIFEST: "linreg-flow/manifest/1",
    DESIGN: "linreg-flow/design/1",
}
PARAMETER_BLOCKS = ("exact", "sgd")  # the two fits of coefficients.json
MODEL_KEYS = ("target", "terms", "intercept", "weights")  # versions that agree on these are the same model


class SchemaError(ValueError):
    """A document is not what its file name and format tag say (the version is damaged or newer)."""


def check_format(name: str, doc: object) -> dict:
    """doc, after checking it is a JSON object whose format tag (if any) is the one this code writes."""
    if not isinstance(doc, dict):
        raise SchemaError(f"{name} is not a JSON object")
    tag = doc.get("format", FORMATS[name])
    if tag != FORMATS[name]:
        raise SchemaError(f"{name} has format {tag!r}; this linreg-flow reads {FORMATS[name]!r} "
                          "(a newer linreg-flow wrote it)")
    return doc


def tagged(name: str, doc: dict) -> dict:
    """doc with the format tag of the document called name first."""
    return {"format": FORMATS[name]} | {key: value for key, value in doc.items() if key != "format"}


def require(name: str, doc: dict, key: str, kind: type) -> Any:
    value = doc.get(key)
    if not isinstance(value, kind):
        raise SchemaError(f"{name}: field {key!r} is missing or not a {kind.__name__}")
    return value


def dict_or_empty(value: object) -> dict:
    return value if isinstance(value, dict) else {}


# The documents (after the helpers above, which they use).
from tasks.publish.schema.coefficients import Coefficients, Drift  # noqa: E402
from tasks.publish.schema.records import BasisRecord, ComparisonRecord, DataRecord, DesignRecord, Manifest  # noqa: E402

__all__ = ["COEFFICIENTS", "COMPARISON", "DESIGN", "FIT_PLOT", "FORMATS", "LATEST", "LOSS_HISTORY", "LOSS_PLOT",
           "MANIFEST", "MODEL_KEYS", "PARAMETER_BLOCKS", "SGD_MODEL", "BasisRecord", "Coefficients",
           "ComparisonRecord", "DataRecord", "DesignRecord", "Drift", "Manifest", "SchemaError", "check_format",
           "require", "tagged"]
