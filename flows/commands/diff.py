"""`linreg diff A B`: two versions side by side.

A and B are version names, paths to version folders, or `latest`. Both must be sound (their JSON
files match the sha256 in their manifest) and, unless `--force`, the same model (target, terms and
intercept); otherwise exit 2 with one line. With `--force` parameters are matched by name
(`intercept` and the term names); one missing on a side shows as "—" (null in JSON).

What is compared, A -> B:
- the data: source, rows, sha256 (equal sha256: the same data);
- the manifest's run parameters, flattened to dotted keys (`train.epochs`, `model.degree`, `alpha`),
  listing only those that differ (in JSON a side's value is absent where that version lacks the key);
- the exact fit's parameters: abs change B - A, rel change (B - A) / |A| (none when A = 0), and the
  change in units of A's standard error (B - A) / se_A (none when se_A is missing or 0);
- the SGD parameters (and their abs change); R², residual SD, and the verdict (converged, summary).

`--json` prints the same content as one JSON object: floats at full precision, non-finite as null.
Keys: a, b ({version, created_at, source, rows, sha256, path}), same_data, model (A's formula),
model_differences, parameters ([{key, a, b}]), exact ([{parameter, a, b, abs_change, rel_change,
se_a, se_change}]), sgd ([{parameter, a, b, abs_change}]), r_squared, residual_std, converged and
summary (each {a, b}).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from flows.commands.show import sound_version
from tasks.errors import UserInputError
from tasks.publish.reader import VersionDocs, jsonable, resolve_version
from tasks.publish.schema import Coefficients
from tasks.wording import counted

NONE = "—"


def _flatten(doc: object, prefix: str = "") -> dict[str, object]:
    """A nested dict as {dotted key: leaf}; lists are leaves."""
    if not isinstance(doc, dict):
        return {prefix: doc}
    flat: dict[str, object] = {}
    for key, value in doc.items():
        flat |= _flatten(value, f"{prefix}.{key}" if prefix else str(key))
    return flat


def _number(value: object) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def parameter_changes(a: dict, b: dict) -> list[dict]:
    """Run parameters (manifest "parameters") whose values differ: [{"key", "a", "b"}], a side
    absent where that version has no such key."""
    fa, fb = _flatten(a), _flatten(b)
    keys = list(fa) + [k for k in fb if k not in fa]
    return [{"key": k} | ({"a": fa[k]} if k in fa else {}) | ({"b": fb[k]} if k in fb else {})
            for k in keys if (k in fa, fa.get(k)) != (k in fb, fb.get(k))]


def coefficient_changes(a_coef: Coefficients, b_coef: Coefficients, fit: str) -> list[dict]:
    """One row per parameter name (A's order, then B's others) of fit "exact" or "sgd"."""
    a, b = a_coef.by_name(getattr(a_coef, fit)), b_coef.by_name(getattr(b_coef, fit))
    se = a_coef.by_name(getattr(a_coef, fit).get("std_errors"))
    rows = []
    for name in list(a) + [n for n in b if n not in a]:
        va, vb, se_a = _number(a.get(name)), _number(b.get(name)), _number(se.get(name))
        change = vb - va if va is not None and vb is not None else None
        row = {"parameter": name, "a": va, "b": vb, "abs_change": change}
        if fit == "exact":
            row |= {"rel_change": change / abs(va) if change is not None and va else None,
                    "se_a": se_a, "se_change": change / se_a if change is not None and se_a else None}
        rows.append(row)
    return rows


def _side(docs: VersionDocs) -> dict:
    data = docs.manifest.data
    return {"version": docs.manifest.version, "created_at": docs.manifest.created_at,
            "source": data.source, "rows": data.rows, "sha256": data.sha256}


def _pair(a: dict, b: dict, key: str) -> dict:
    return {"a": a.get(key), "b": b.get(key)}


def compare_versions(a: VersionDocs, b: VersionDocs) -> dict:
    """The whole comparison of two sound versions, as a JSON-ready dict (pure)."""
    ca, cb = a.coefficients, b.coefficients
    ea, eb = ca.exact, cb.exact
    side_a, side_b = _side(a), _side(b)
    return {
        "a": side_a, "b": side_b,
        "same_data": side_a["sha256"] is not None and side_a["sha256"] == side_b["sha256"],
        "model": ca.model_formula(),
        "model_differences": ca.model_differences(cb),
        "parameters": parameter_changes(a.manifest.parameters, b.manifest.parameters),
        "exact": coefficient_changes(ca, cb, "exact"),
        "sgd": coefficient_changes(ca, cb, "sgd"),
        "r_squared": _pair(ea, eb, "r_squared"),
        "r_squared_label": ca.r_squared_label(),
        "residual_std": _pair(ea, eb, "residual_std"),
        "converged": {"a": a.comparison.converged, "b": b.comparison.converged},
        "summary": {"a": a.comparison.summary, "b": b.comparison.summary},
    }


def _fmt(value: object, spec: str = ".6g") -> str:
    return NONE if _number(value) is None else format(value, spec)


def _columns(rows: list[list[str]], left: int = 1) -> list[str]:
    """Rows of cells as aligned lines: the first `left` columns left-aligned, the others right-aligned."""
    widths = [max(len(row[j]) for row in rows) for j in range(len(rows[0]))]
    return ["  " + "  ".join(c.ljust(w) if j < left else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths)))
            .rstrip() for row in rows]


def _verdict(value: object) -> str:
    return "converged" if value is True else "not converged" if value is False else "?"


def diff_text(doc: dict) -> str:
    """The comparison (compare_versions' dict) as plain text a person reads at a glance."""
    def rows(n: object) -> str:
        return counted(n, "row") if isinstance(n, int) else f"{n} rows"

    sides = [[label, str(s["version"]), f"created {s['created_at']}", str(s["source"]), rows(s["rows"]),
              f"sha256 {str(s['sha256'])[:12]}"] for label, s in (("A", doc["a"]), ("B", doc["b"]))]
    lines = [*_columns(sides, left=4), f"  data   {'same (equal sha256)' if doc['same_data'] else 'different'}",
             f"  model  {doc['model']}" if not doc["model_differences"] else
             f"  models differ ({'; '.join(doc['model_differences'])}): compared by parameter name"]

    def value(change: dict, side: str) -> str:
        return json.dumps(change[side]) if side in change else NONE

    changes = [f"  {c['key']}: {value(c, 'a')} -> {value(c, 'b')}" for c in doc["parameters"]]
    lines += ["", "parameters that differ" + ("" if changes else ": none"), *changes, "", "exact fit"]
    lines += _columns([["parameter", "A", "B", "abs change", "rel change", "change / se(A)"]] + [
        [r["parameter"], _fmt(r["a"], ".10g"), _fmt(r["b"], ".10g"), _fmt(r["abs_change"], ".4g"),
         _fmt(r["rel_change"], ".3g"), _fmt(r["se_change"], ".3g")] for r in doc["exact"]])
    lines += ["", "SGD"]
    lines += _columns([["parameter", "A", "B", "abs change"]] + [
        [r["parameter"], _fmt(r["a"], ".10g"), _fmt(r["b"], ".10g"), _fmt(r["abs_change"], ".4g")]
        for r in doc["sgd"]])
    r2, sd, conv, summary = doc["r_squared"], doc["residual_std"], doc["converged"], doc["summary"]
    lines += ["", *_columns([
        [doc["r_squared_label"], f"{_fmt(r2['a'], '.8g')} -> {_fmt(r2['b'], '.8g')}"],
        ["residual SD", f"{_fmt(sd['a'])} -> {_fmt(sd['b'])}"],
        ["verdict", f"{_verdict(conv['a'])} -> {_verdict(conv['b'])}"]], left=2),
        f"  A: {summary['a']}", f"  B: {summary['b']}"]
    return "\n".join(lines)


def _read(artifacts_dir: Path, version: str) -> tuple[Path, VersionDocs]:
    path = resolve_version(artifacts_dir, version)
    return path, sound_version(path)


def diff_report(artifacts_dir: Path, a: str, b: str, *, force: bool, as_json: bool) -> str:
    """Read versions a and b, compare them, and return the text (or JSON) to print."""
    (path_a, docs_a), (path_b, docs_b) = _read(artifacts_dir, a), _read(artifacts_dir, b)
    doc = compare_versions(docs_a, docs_b)
    if doc["model_differences"] and not force:
        raise UserInputError(f"versions {a!r} and {b!r} are different models: {'; '.join(doc['model_differences'])}"
                             " (use --force to compare them anyway)")
    doc["a"]["path"], doc["b"]["path"] = str(path_a), str(path_b)
    return json.dumps(jsonable(doc), indent=2, allow_nan=False, ensure_ascii=False) if as_json else diff_text(doc)
