"""Tiny shared fixtures for the tests: the tutorial's ten points and its exact line, a Design builder,
the NIST StRD sets and the LRE (correct digits) against a certified value, strict JSON."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import replace
from decimal import Decimal
from fractions import Fraction
from functools import cache
from pathlib import Path

import numpy as np

from tasks.kernels.design import Design
from tasks.kernels.formula import FormulaModel, formula_variables

# The tutorial's data (data/seed.csv) and its exact least-squares line.
TUTORIAL_X = np.array([1.05, 1.54, 2.01, 2.55, 3.13, 3.45, 4.02, 4.65, 5.34, 5.50])
TUTORIAL_Y = np.array([10.3, 15.4, 21.2, 25.4, 30.1, 35.6, 40.5, 43.4, 50.1, 56.6])
TUTORIAL_B0 = 0.7824239351471718
TUTORIAL_B1 = 9.650293641652478


def make_design(
    features: np.ndarray | Sequence,
    y: np.ndarray | Sequence,
    names: Sequence[str] | None = None,
    *,
    degree: int = 1,
    intercept: bool = True,
    target: str = "y",
) -> Design:
    """A Design from a (n,) or (n, p) feature array; names default to x1, x2, ... (x for one column)."""
    X = np.asarray(features, dtype=np.float64)
    if X.ndim == 1:
        X = X[:, None]
    if names is None:
        names = ("x",) if X.shape[1] == 1 else tuple(f"x{j + 1}" for j in range(X.shape[1]))
    return Design.from_arrays(X, np.asarray(y, dtype=np.float64), tuple(names), target=target,
                              degree=degree, intercept=intercept)


def formula_design(formula: str, columns: dict[str, np.ndarray], y: np.ndarray, block_rows: int = 65536) -> Design:
    """A formula model's Design held in memory, as the ingest pass builds it: the levels of every
    categorical column from the whole table, text columns held as the index of their level."""
    import pandas as pd

    frame = pd.DataFrame(columns | {"y": y})
    target, variables, categorical = formula_variables(formula, tuple(frame.columns), frame)
    strings = tuple(v for v in variables if not pd.api.types.is_numeric_dtype(frame[v]))
    levels = {v: tuple(sorted(pd.unique(frame[v]).tolist())) for v in categorical}
    model = FormulaModel(formula, target, variables, strings, levels)
    values = np.column_stack([np.searchsorted(np.array(levels[v], dtype=object), frame[v].to_numpy(dtype=object))
                              .astype(np.float64) if v in strings else frame[v].to_numpy(np.float64) for v in variables])
    design = Design.from_arrays(values, frame[target].to_numpy(np.float64), variables, target,
                                intercept=model.intercept, block_rows=block_rows)
    return replace(design, formula=model)


def tutorial_design(*, intercept: bool = True) -> Design:
    """The tutorial's straight line y ~ b0 + b1 x."""
    return make_design(TUTORIAL_X, TUTORIAL_Y, intercept=intercept)


def max_rel_error(actual: np.ndarray | Sequence, expected: np.ndarray | Sequence) -> float:
    """max_j |actual_j - expected_j| / |expected_j|."""
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    return float(np.max(np.abs(a - e) / np.abs(e)))


def seed_workspace(root: Path, seed_csv_text: str) -> Path:
    """A working folder laid out like the project: data/seed.csv and nothing else."""
    (root / "data").mkdir()
    (root / "data" / "seed.csv").write_text(seed_csv_text)
    return root


def strict_loads(data: bytes | str) -> dict:
    """JSON as the standard defines it: NaN and Infinity are refused."""
    def refuse(constant: str):
        raise AssertionError(f"{constant} in a document")
    return json.loads(data, parse_constant=refuse)


# NIST StRD linear regression sets (public domain): tests/data/nist/<name>.csv (x columns, y) and
# <name>.json (model_detail: type, degree, intercept; certified: parameters, std_devs, residual_sd, ...).
NIST_DIR = Path(__file__).resolve().parent / "data" / "nist"
NIST_NAMES = ["Norris", "Pontius", "NoInt1", "NoInt2", "Filip", "Longley",
              "Wampler1", "Wampler2", "Wampler3", "Wampler4", "Wampler5"]


@cache
def nist_meta(name: str) -> dict:
    """The set's JSON: model_detail and certified values (decimal strings)."""
    return json.loads((NIST_DIR / f"{name}.json").read_text())


def nist_arrays(name: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(X, y, feature names) of the set, parsed by pandas."""
    import pandas as pd

    frame = pd.read_csv(NIST_DIR / f"{name}.csv")
    features = [c for c in frame.columns if c != "y"]
    return frame[features].to_numpy(float), frame["y"].to_numpy(float), features


def nist_design(name: str) -> Design:
    """The set's model as a Design: a polynomial of its degree, with or without an intercept."""
    detail = nist_meta(name)["model_detail"]
    X, y, features = nist_arrays(name)
    return make_design(X, y, features, degree=detail["degree"] if detail["type"] == "polynomial" else 1,
                       intercept=detail["intercept"])


def lre(estimate: float | None, certified: str | Fraction | float) -> float:
    """Log relative error, the digits of agreement with a certified value (a decimal string or an
    exact number): -log10 |estimate - c| / |c|, absolute where c is 0 (the NIST/McCullough
    convention), computed exactly, capped at 15."""
    assert estimate is not None and math.isfinite(estimate), f"no estimate for certified {certified}"
    c = Fraction(Decimal(certified)) if isinstance(certified, str) else Fraction(certified)
    err = abs(Fraction(estimate) - c)
    if c != 0:
        err /= abs(c)
    return 15.0 if err == 0 else min(15.0, -math.log10(err))
