"""coefficients.json as a document: the model, its two fits and the drift since its previous version."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from tasks.publish.schema import COEFFICIENTS, FORMATS, MODEL_KEYS, SchemaError, check_format, require


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
    beside any null number its reason (K_reason); drift is added as the version is named. formula: as
    given (None: the model of --target, --features and --degree); nobs: the rows fitted;
    dropped_rows: those --missing drop left out; weights: the weights' column (None: unweighted).
    Documents from before these fields read them as None."""

    target: str
    terms: tuple[str, ...]
    intercept: bool
    exact: dict
    sgd: dict
    drift: Drift | None = None
    formula: str | None = None
    nobs: int | None = None
    dropped_rows: int | None = None
    weights: str | None = None

    def to_json(self) -> dict:
        doc = {"format": FORMATS[COEFFICIENTS], "target": self.target, "terms": list(self.terms),
               "intercept": self.intercept, "formula": self.formula, "nobs": self.nobs,
               "dropped_rows": self.dropped_rows, "weights": self.weights, "exact": self.exact, "sgd": self.sgd}
        return doc | ({"drift": self.drift.to_json()} if self.drift is not None else {})

    @classmethod
    def from_json(cls, doc: object) -> Coefficients:
        doc = check_format(COEFFICIENTS, doc)
        terms = require(COEFFICIENTS, doc, "terms", list)
        if not all(isinstance(t, str) for t in terms):
            raise SchemaError(f"{COEFFICIENTS}: field 'terms' is not a list of names")
        exact = dict(require(COEFFICIENTS, doc, "exact", dict))
        if "format" not in doc:  # written before the format tag, as older readers read it
            exact.setdefault("alpha", 0.05)  # the level before it was an option
            exact.setdefault("df_resid", exact.get("dof"))
        return cls(require(COEFFICIENTS, doc, "target", str), tuple(terms), require(COEFFICIENTS, doc, "intercept", bool),
                   exact, dict(require(COEFFICIENTS, doc, "sgd", dict)), Drift.from_json(doc.get("drift")),
                   doc.get("formula"), doc.get("nobs"), doc.get("dropped_rows"), doc.get("weights"))

    def with_drift(self, drift: Drift) -> Coefficients:
        return dataclasses.replace(self, drift=drift)

    @property
    def model(self) -> tuple:
        """What makes the model: versions that agree on it can be compared."""
        return self.target, self.terms, self.intercept, self.weights

    def same_model(self, other: Coefficients) -> bool:
        return self.model == other.model

    def model_differences(self, other: Coefficients) -> list[str]:
        """What makes two documents different models, e.g. "terms ['x'] vs ['x', 'x^2']"."""
        return [f"{key} {list(a) if isinstance(a, tuple) else a!r} vs {list(b) if isinstance(b, tuple) else b!r}"
                for key, a, b in zip(MODEL_KEYS, self.model, other.model) if a != b]

    def model_formula(self) -> str:
        """The model as a formula: as given, or e.g. "y ~ 1 + x + x^2"."""
        if self.formula:
            return self.formula
        return f"{self.target} ~ {' + '.join(['1'] * self.intercept + list(self.terms))}"

    def r_squared_label(self) -> str:
        """"R²", or "R² (uncentered)" for a model without an intercept (sum of y² as the total, as
        statsmodels and NIST report it): the two are not comparable."""
        return "R²" if self.intercept or self.exact.get("k_constant") else "R² (uncentered)"

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
