"""NIST StRD accuracy: minimum LRE of linreg-flow's exact fit next to numpy.linalg.lstsq, per dataset.

Run alone: python -m bench.bench_nist
"""

from __future__ import annotations

import json
import warnings
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd

from bench.common import markdown_table
from tasks.exact.fit import ExactFit, fit_exact
from tasks.kernels.design import Design
from tasks.kernels.table import BLOCK_ROWS

NIST = Path(__file__).resolve().parents[1] / "tests" / "data" / "nist"
NAMES = ["Norris", "Pontius", "NoInt1", "NoInt2", "Filip", "Longley",
         "Wampler1", "Wampler2", "Wampler3", "Wampler4", "Wampler5"]


def lre(estimate: float, certified: str) -> float:
    """-log10 of the relative error (absolute where the certified value is 0), capped at 15."""
    c = Decimal(certified)
    err = abs(Decimal(float(estimate)) - c)
    if c != 0:
        err /= abs(c)
    return 15.0 if err == 0 else max(0.0, min(15.0, -float(err.log10())))


def load(name: str, block_rows: int = BLOCK_ROWS) -> tuple[Design, dict]:
    meta = json.loads((NIST / f"{name}.json").read_text())
    detail = meta["model_detail"]
    frame = pd.read_csv(NIST / f"{name}.csv")
    features = [c for c in frame.columns if c != "y"]
    design = Design.from_arrays(frame[features].to_numpy(float), frame["y"].to_numpy(float), tuple(features), "y",
                                degree=detail["degree"] if detail["type"] == "polynomial" else 1,
                                intercept=detail["intercept"], block_rows=block_rows)
    return design, meta["certified"]


def _fit(design: Design) -> ExactFit:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fit_exact(design)


def measure() -> list[dict]:
    """Per dataset: the minimum LRE of each certified quantity, read in one block and in blocks of 3 rows."""
    rows = []
    for name in NAMES:
        design, cert = load(name)
        fit = _fit(design)
        streamed = _fit(load(name, block_rows=3)[0])
        ses = ([fit.se_intercept] if design.intercept else []) + list(fit.se_coefficients)
        plain = np.linalg.lstsq(design.matrix(), design.y, rcond=None)[0]
        rows.append({
            "dataset": name,
            "coefficients": min(lre(q, c) for q, c in zip(fit.params, cert["parameters"])),
            "coefficients_3_rows": min(lre(q, c) for q, c in zip(streamed.params, cert["parameters"])),
            "std_errors": min(lre(q, c) for q, c in zip(ses, cert["std_devs"])),
            "residual_sd": lre(fit.residual_std, cert["residual_sd"]),
            "r_squared": lre(fit.r_squared, cert["r_squared"]),
            "lstsq": min(lre(q, c) for q, c in zip(plain, cert["parameters"])),
        })
    return rows


def section(rows: list[dict]) -> str:
    keys = ["coefficients", "coefficients_3_rows", "std_errors", "residual_sd", "r_squared", "lstsq"]
    return markdown_table(
        ["dataset", "coefficients", "coefficients, blocks of 3 rows", "std. errors", "residual SD", "R²",
         "numpy lstsq coefficients"],
        [[r["dataset"], *(f"{r[k]:.1f}" for k in keys)] for r in rows])


if __name__ == "__main__":
    print(section(measure()))
