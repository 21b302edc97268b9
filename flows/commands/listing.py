"""`linreg versions`: a table of version folders, newest first."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

from tasks.errors import UserInputError
from tasks.publish.reader import ARTIFACTS_ENV, list_versions, read_version
from tasks.publish.schema import Drift


def _num(value: object) -> str:
    return f"{value:.6g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "—"


def _drift(drift: Drift | None) -> str:
    """Largest relative change of the exact parameters since the previous version of the model."""
    if drift is None or not drift.since:
        return "first"
    return f"{_num(drift.max_rel_change)} since {drift.since}"


def print_versions(artifacts_dir: Path, shown: Callable[[str], str] = str) -> None:
    """Print one row per version: when, data, model, exact and SGD parameters, verdict. shown: how
    the folder is named (its URL, when it mirrors an object store: tasks/publish/remote.py)."""
    if artifacts_dir.exists() and not artifacts_dir.is_dir():
        raise UserInputError(f"option --artifacts-dir: {artifacts_dir} is not a folder")
    found = list_versions(artifacts_dir)
    if not found:
        print(shown(f"no versions in {artifacts_dir.resolve()} (--artifacts-dir, or {ARTIFACTS_ENV}, names "
                    "another folder)"), file=sys.stderr)
        return
    table = Table(title=shown(f"versions in {artifacts_dir}"), title_justify="left")
    for column in ("version", "rows", "model", "exact params", "sgd params", "max rel diff",
                   "epochs", "converged", "drift"):
        # A version name is never wrapped or shortened: it is what the other verbs take.
        table.add_column(column, no_wrap=column in ("version", "drift"), overflow="fold",
                         min_width=len(found[-1].name) if column == "version" else None)
    for path in reversed(found):
        docs = read_version(path)
        if docs.damage:  # unreadable or changed by hand: its figures cannot be trusted
            table.add_row(path.name, "—", f"damaged: {docs.damage}", *["—"] * 6)
            continue
        coef, comp, manifest = docs.coefficients, docs.comparison, docs.manifest

        def params(fit: str) -> str:
            return ", ".join(_num(v) for v in coef.parameters(fit)[1])

        table.add_row(path.name, _num(manifest.data.rows), coef.model_formula(), params("exact"), params("sgd"),
                      _num(comp.max_rel_diff), _num(coef.sgd.get("epochs")),
                      {True: "yes", False: "no"}.get(comp.converged, "?"), _drift(coef.drift))
    Console(width=200 if not Console().is_terminal else None).print(table)
