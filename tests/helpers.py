"""Tiny shared fixtures for the tests: the tutorial's ten points, a Design builder, strict JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tasks.kernels.design import Design

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
