"""Drift: how the exact coefficients of a model moved since its previous version, computed as a
version is named (under the publish lock), from the two coefficients documents."""

from __future__ import annotations

from tasks.publish.schema import Coefficients, Drift


def drift(previous: Coefficients | None, previous_version: str | None, doc: Coefficients) -> Drift:
    """How the exact coefficients of doc moved since previous (the newest sound version of the same
    model, named previous_version): per parameter, and the largest absolute and relative change."""
    if previous is None:
        return Drift()
    names, now = doc.parameters("exact")
    _, before = previous.parameters("exact")
    changes = {n: (b - a if a is not None and b is not None else None) for n, a, b in zip(names, before, now)}
    rel = [abs(c) / abs(a) for c, a in zip(changes.values(), before) if c is not None and a]
    finite = [abs(c) for c in changes.values() if c is not None]
    return Drift(previous_version, changes, max(finite) if finite else None, max(rel) if rel else None)
