"""Reading a coefficients.json document: its model (formula, parameter names and values in order) and
how its exact coefficients moved since the previous version of the same model (drift)."""

from __future__ import annotations

# What makes a model in coefficients.json: versions that agree on these can be compared.
MODEL_KEYS = ("target", "terms", "intercept")


def formula(doc: dict) -> str:
    """The model of a coefficients.json document as a formula, e.g. "y ~ 1 + x + x^2"."""
    terms = ["1"] * bool(doc.get("intercept")) + list(doc.get("terms") or [])
    return f"{doc.get('target', '?')} ~ {' + '.join(terms)}"


def r_squared_label(doc: dict) -> str:
    """"R²", or "R² (uncentered)" for a model without an intercept (sum of y² as the total, as
    statsmodels and NIST report it): the two are not comparable."""
    return "R²" if doc.get("intercept", True) else "R² (uncentered)"


def parameter_names(doc: dict) -> list[str]:
    """The parameters of a coefficients.json document: "intercept" (when there is one), then the terms."""
    return ["intercept"] * bool(doc.get("intercept")) + list(doc.get("terms") or [])


def parameter_values(doc: dict, block: dict | None) -> list:
    """A {"intercept", "coefficients"} block of doc as one list in parameter order; None where
    absent (e.g. a field of a document written before the field existed)."""
    block = block or {}
    values = [block.get("intercept")] * bool(doc.get("intercept")) + list(block.get("coefficients") or [])
    return values + [None] * (len(parameter_names(doc)) - len(values))


def parameters(doc: dict, block: str) -> tuple[list[str], list[float | None]]:
    """Names and values of one block ("exact" or "sgd") of coefficients.json, intercept first."""
    return parameter_names(doc), parameter_values(doc, doc[block])


def same_model(a: dict, b: dict) -> bool:
    """Same target, terms and intercept: the coefficients of the two can be compared."""
    return all(a.get(key) == b.get(key) for key in MODEL_KEYS)


def drift(previous: dict | None, previous_version: str | None, doc: dict) -> dict:
    """How the exact coefficients moved since the previous version of the same model."""
    if previous is None:
        return {"since": None, "changes": None, "max_abs_change": None, "max_rel_change": None}
    names, now = parameters(doc, "exact")
    _, before = parameters(previous, "exact")
    changes = {n: (b - a if a is not None and b is not None else None) for n, a, b in zip(names, before, now)}
    rel = [abs(c) / abs(a) for c, a in zip(changes.values(), before) if c is not None and a]
    finite = [abs(c) for c in changes.values() if c is not None]
    return {
        "since": previous_version,
        "changes": changes,
        "max_abs_change": max(finite) if finite else None,
        "max_rel_change": max(rel) if rel else None,
    }
