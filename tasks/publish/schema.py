"""The layout of a version folder, in one place: its file names, the format tag of each JSON document
and each document as a frozen dataclass with to_json / from_json.

Writers build a document and call to_json; readers call from_json, which refuses (SchemaError) what
is not the document its tag names, and reads a document written before tags existed (no "format") with
the defaults readers always applied: alpha 0.05, df_resid = dof, an absent field None. A tag of a
newer format than this code knows is refused, never guessed at. No Prefect, torch or numpy here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
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
MODEL_KEYS = ("target", "terms", "intercept")  # versions that agree on these are the same model


class SchemaError(ValueError):
    """A document is not what its file name and format tag say (the version is damaged or newer)."""


def _check_format(name: str, doc: object) -> dict:
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


def _require(name: str, doc: dict, key: str, kind: type) -> Any:
    value = doc.get(key)
    if not isinstance(value, kind):
        raise SchemaError(f"{name}: field {key!r} is missing or not a {kind.__name__}")
    return value


def _dict_or_empty(value: object) -> dict:
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class Drift:
    """How the exact parameters moved since the newest sound version of the same model (since: its name;
    None for the first version of a model, and then every figure is None)."""

    since: str | None = None
    changes: dict[str, float | None] | None = None
    max_abs_change: float | None = None
    max_rel_change: float | None = None

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, doc: object) -> Drift | None:
        if not isinstance(doc, dict):
            return None
        return cls(doc.get("since"), doc.get("changes"), doc.get("max_abs_change"), doc.get("max_rel_change"))


@dataclass(frozen=True, eq=False)
class Coefficients:
    """coefficients.json: the model (target, terms, intercept) and its two fits, each a JSON block
    whose per-parameter fields are {"intercept": first or null, "coefficients": [the rest]} and
    beside any null number its reason (K_reason); drift is added as the version is named."""

    target: str
    terms: tuple[str, ...]
    intercept: bool
    exact: dict
    sgd: dict
    drift: Drift | None = None

    def to_json(self) -> dict:
        doc = {"format": FORMATS[COEFFICIENTS], "target": self.target, "terms": list(self.terms),
               "intercept": self.intercept, "exact": self.exact, "sgd": self.sgd}
        return doc | ({"drift": self.drift.to_json()} if self.drift is not None else {})

    @classmethod
    def from_json(cls, doc: object) -> Coefficients:
        doc = _check_format(COEFFICIENTS, doc)
        terms = _require(COEFFICIENTS, doc, "terms", list)
        if not all(isinstance(t, str) for t in terms):
            raise SchemaError(f"{COEFFICIENTS}: field 'terms' is not a list of names")
        exact = dict(_require(COEFFICIENTS, doc, "exact", dict))
        if "format" not in doc:  # written before the format tag, as older readers read it
            exact.setdefault("alpha", 0.05)  # the level before it was an option
            exact.setdefault("df_resid", exact.get("dof"))
        return cls(_require(COEFFICIENTS, doc, "target", str), tuple(terms), _require(COEFFICIENTS, doc, "intercept", bool),
                   exact, dict(_require(COEFFICIENTS, doc, "sgd", dict)), Drift.from_json(doc.get("drift")))

    def with_drift(self, drift: Drift) -> Coefficients:
        return dataclasses.replace(self, drift=drift)

    @property
    def model(self) -> tuple:
        """What makes the model: versions that agree on it can be compared."""
        return self.target, self.terms, self.intercept

    def same_model(self, other: Coefficients) -> bool:
        return self.model == other.model

    def model_differences(self, other: Coefficients) -> list[str]:
        """What makes two documents different models, e.g. "terms ['x'] vs ['x', 'x^2']"."""
        return [f"{key} {list(a) if isinstance(a, tuple) else a!r} vs {list(b) if isinstance(b, tuple) else b!r}"
                for key, a, b in zip(MODEL_KEYS, self.model, other.model) if a != b]

    def formula(self) -> str:
        """The model as a formula, e.g. "y ~ 1 + x + x^2"."""
        return f"{self.target} ~ {' + '.join(['1'] * self.intercept + list(self.terms))}"

    def r_squared_label(self) -> str:
        """"R²", or "R² (uncentered)" for a model without an intercept (sum of y² as the total, as
        statsmodels and NIST report it): the two are not comparable."""
        return "R²" if self.intercept else "R² (uncentered)"

    def parameter_names(self) -> list[str]:
        """"intercept" (when there is one), then the terms."""
        return ["intercept"] * self.intercept + list(self.terms)

    def values(self, block: dict | None) -> list:
        """A {"intercept", "coefficients"} block as one list in parameter order; None where absent
        (e.g. a field of a document written before the field existed)."""
        block = block if isinstance(block, dict) else {}
        values = [block.get("intercept")] * self.intercept + list(block.get("coefficients") or [])
        return values + [None] * (len(self.parameter_names()) - len(values))

    def parameters(self, fit: str) -> tuple[list[str], list]:
        """Names and values of one fit ("exact" or "sgd"), intercept first."""
        return self.parameter_names(), self.values(getattr(self, fit))

    def by_name(self, block: dict | None) -> dict[str, Any]:
        """A {"intercept", "coefficients"} block as {parameter name: value}."""
        return dict(zip(self.parameter_names(), self.values(block)))


@dataclass(frozen=True, eq=False)
class ComparisonRecord:
    """comparison.json as read back: the figures readers show, and every field as written
    (`fields`: the contract's and whatever helps, null numbers with their reasons)."""

    converged: bool | None
    summary: str | None
    max_abs_diff: float | None
    max_rel_diff: float | None
    remedies: tuple[str, ...]
    fields: dict

    def to_json(self) -> dict:
        return tagged(COMPARISON, self.fields)

    @classmethod
    def from_json(cls, doc: object) -> ComparisonRecord:
        doc = _check_format(COMPARISON, doc)
        converged = doc.get("converged")
        return cls(converged if isinstance(converged, bool) else None, doc.get("summary"), doc.get("max_abs_diff"),
                   doc.get("max_rel_diff"), tuple(doc.get("remedies") or ()), doc)


@dataclass(frozen=True)
class DataRecord:
    """Where a version's data came from: the source as given, its content's SHA-256, rows, and the
    validated Parquet copy it was fitted from."""

    source: str | None = None
    sha256: str | None = None
    rows: int | None = None
    parquet: str | None = None


@dataclass(frozen=True, eq=False)
class Manifest:
    """manifest.json: the run's data, parameters, environment and timings; version, created_at and
    files (name -> sha256 of every other file) are added by the writer as the version is named."""

    data: DataRecord
    parameters: dict
    environment: dict
    timings: dict[str, float]
    version: str | None = None
    created_at: str | None = None
    files: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict:
        doc = {"format": FORMATS[MANIFEST], "version": self.version, "created_at": self.created_at,
               "data": dataclasses.asdict(self.data), "parameters": self.parameters,
               "environment": self.environment, "timings": self.timings, "files": self.files}
        return {key: value for key, value in doc.items() if value is not None}

    @classmethod
    def from_json(cls, doc: object) -> Manifest:
        doc = _check_format(MANIFEST, doc)
        data = _dict_or_empty(doc.get("data"))
        files = _dict_or_empty(doc.get("files"))
        return cls(DataRecord(data.get("source"), data.get("sha256"), data.get("rows"), data.get("parquet")),
                   _dict_or_empty(doc.get("parameters")), _dict_or_empty(doc.get("environment")),
                   _dict_or_empty(doc.get("timings")), doc.get("version"), doc.get("created_at"), files)

    def named(self, version: str, created_at: str, files: dict[str, str]) -> Manifest:
        return dataclasses.replace(self, version=version, created_at=created_at, files=files)


@dataclass(frozen=True)
class BasisRecord:
    """The scaling of the design's columns W = X T (kernels.design.ScaledBasis without its exact form)."""

    kind: str
    shift: tuple[float, ...]
    scale: tuple[float, ...]
    ones: float
    degree: int


@dataclass(frozen=True, eq=False)
class DesignRecord:
    """design.json: what a prediction needs. The exact fit in the design's well-conditioned basis
    W = X T = Q R: W c = X beta (c rounded once from exact rationals), and R for the leverage
    h = |R^-T w|^2 of a new row w; the features' fitted range."""

    target: str
    features: tuple[str, ...]
    terms: tuple[str, ...]
    degree: int
    intercept: bool
    rows: int
    basis: BasisRecord
    basis_coefficients: tuple[float, ...]
    r_factor: tuple[tuple[float, ...], ...]
    feature_min: tuple[float, ...]
    feature_max: tuple[float, ...]

    def to_json(self) -> dict:
        doc = dataclasses.asdict(self)
        return {"format": FORMATS[DESIGN]} | {key: _lists(value) for key, value in doc.items()}

    @classmethod
    def from_json(cls, doc: object) -> DesignRecord:
        doc = _check_format(DESIGN, doc)
        try:
            b = doc["basis"]
            basis = BasisRecord(str(b["kind"]), tuple(map(float, b["shift"])), tuple(map(float, b["scale"])),
                                float(b["ones"]), int(b["degree"]))
            return cls(str(doc["target"]), tuple(doc["features"]), tuple(doc["terms"]), int(doc["degree"]),
                       bool(doc["intercept"]), int(doc["rows"]), basis, tuple(map(float, doc["basis_coefficients"])),
                       tuple(tuple(map(float, row)) for row in doc["r_factor"]),
                       tuple(map(float, doc["feature_min"])), tuple(map(float, doc["feature_max"])))
        except (KeyError, TypeError, ValueError) as exc:
            raise SchemaError(f"{DESIGN}: {type(exc).__name__} {exc}") from None


def _lists(value: object) -> object:
    """Tuples (nested too) as JSON lists."""
    if isinstance(value, (tuple, list)):
        return [_lists(v) for v in value]
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    return value
