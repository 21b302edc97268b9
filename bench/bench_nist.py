"""NIST StRD accuracy: minimum LRE of linreg-flow's exact fit next to numpy.linalg.lstsq, per dataset."""

from __future__ import annotations

import json
import math
import warnings
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.kernels.design import Design
from tasks.exact import fit_exact

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


def load(name: str) -> tuple[Design, dict]:
    meta = json.loads((NIST / f"{name}.json").read_text())
    detail = meta["model_detail"]
    frame = pd.read_csv(NIST / f"{name}.csv")
    features = [c for c in frame.columns if c != "y"]
    design = Design.from_arrays(frame[features].to_numpy(float), frame["y"].to_numpy(float), tuple(features), "y",
                    degree=detail["degree"] if detail["type"] == "polynomial" else 1,
                    intercept=detail["intercept"])
    return design, meta["certified"]


def main() -> list[dict]:
    rows = []
    print("| dataset | coefficients | std. errors | residual SD | R² | numpy lstsq coefficients |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name in NAMES:
        design, cert = load(name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = fit_exact(design)
        ses = ([fit.se_intercept] if design.intercept else []) + list(fit.se_coefficients)
        plain = np.linalg.lstsq(design.matrix(), design.y, rcond=None)[0]
        row = {
            "dataset": name,
            "coefficients": min(lre(q, c) for q, c in zip(fit.params, cert["parameters"])),
            "std_errors": min(lre(q, c) for q, c in zip(ses, cert["std_devs"])),
            "residual_sd": lre(fit.residual_std, cert["residual_sd"]),
            "r_squared": lre(fit.r_squared, cert["r_squared"]),
            "lstsq": min(lre(q, c) for q, c in zip(plain, cert["parameters"])),
        }
        rows.append(row)
        print(f"| {name} | {row['coefficients']:.1f} | {row['std_errors']:.1f} | {row['residual_sd']:.1f} "
              f"| {row['r_squared']:.1f} | {row['lstsq']:.1f} |")
    return rows


if __name__ == "__main__":
    main()
