"""comparison.json, manifest.json and design.json as documents."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from tasks.publish.schema import COMPARISON, DESIGN, FORMATS, MANIFEST, SchemaError, check_format, dict_or_empty, tagged


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
        doc = check_format(COMPARISON, doc)
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
    # The key of the run's exact fit and training (tasks/publish/reuse.py), and the earlier version
    # whose fits this run reused (None: computed by this run).
    fit_key: str | None = None
    reused_from: str | None = None

    def to_json(self) -> dict:
        doc = {"format": FORMATS[MANIFEST], "version": self.version, "created_at": self.created_at,
               "data": dataclasses.asdict(self.data), "parameters": self.parameters,
               "environment": self.environment, "timings": self.timings, "files": self.files,
               "fit_key": self.fit_key, "reused_from": self.reused_from}
        return {key: value for key, value in doc.items() if value is not None}

    @classmethod
    def from_json(cls, doc: object) -> Manifest:
        doc = check_format(MANIFEST, doc)
        data = dict_or_empty(doc.get("data"))
        files = dict_or_empty(doc.get("files"))
        return cls(DataRecord(data.get("source"), data.get("sha256"), data.get("rows"), data.get("parquet")),
                   dict_or_empty(doc.get("parameters")), dict_or_empty(doc.get("environment")),
                   dict_or_empty(doc.get("timings")), doc.get("version"), doc.get("created_at"), files,
                   doc.get("fit_key"), doc.get("reused_from"))

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
    formula: dict | None = None  # kernels.formula.FormulaModel.to_json(): the terms of the raw columns
    weights: str | None = None  # the weights' column (--weights): the basis is then of the rows sqrt(w) [1, terms]

    def to_json(self) -> dict:
        doc = dataclasses.asdict(self)
        return {"format": FORMATS[DESIGN]} | {key: _lists(value) for key, value in doc.items()}

    @classmethod
    def from_json(cls, doc: object) -> DesignRecord:
        doc = check_format(DESIGN, doc)
        try:
            b = doc["basis"]
            basis = BasisRecord(str(b["kind"]), tuple(map(float, b["shift"])), tuple(map(float, b["scale"])),
                                float(b["ones"]), int(b["degree"]))
            return cls(str(doc["target"]), tuple(doc["features"]), tuple(doc["terms"]), int(doc["degree"]),
                       bool(doc["intercept"]), int(doc["rows"]), basis, tuple(map(float, doc["basis_coefficients"])),
                       tuple(tuple(map(float, row)) for row in doc["r_factor"]),
                       tuple(map(float, doc["feature_min"])), tuple(map(float, doc["feature_max"])), doc.get("formula"),
                       doc.get("weights"))
        except (KeyError, TypeError, ValueError) as exc:
            raise SchemaError(f"{DESIGN}: {type(exc).__name__} {exc}") from None


def _lists(value: object) -> object:
    """Tuples (nested too) as JSON lists."""
    if isinstance(value, (tuple, list)):
        return [_lists(v) for v in value]
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    return value
