"""The accurate exact fit against plain numpy.linalg.lstsq on a 1e6 x 8 design, same process."""

from __future__ import annotations

import statistics
import time
import warnings

import numpy as np

from tasks.kernels.design import Design
from tasks.exact import fit_exact


def make_design(n: int = 1_000_000, p: int = 8, seed: int = 0) -> Design:
    rng = np.random.default_rng(seed)
    # Mixed scales and offsets, like real columns (years, prices, fractions).
    X = rng.normal(size=(n, p)) * np.logspace(-3, 4, p) + np.linspace(0, 2000, p)
    y = X @ rng.normal(size=p) + rng.normal(size=n)
    return Design.from_arrays(X, y, tuple(f"x{j}" for j in range(p)), "y")


def plain(design: Design) -> np.ndarray:
    """What a user would write: lstsq on [1, X]."""
    return np.linalg.lstsq(design.matrix(), design.y, rcond=None)[0]


def ours(design: Design) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fit_exact(design).params


def main(repeats: int = 3) -> dict:
    design = make_design()
    times = {"lstsq": [], "linreg-flow": []}
    for _ in range(repeats):
        for name, fn in (("lstsq", plain), ("linreg-flow", ours)):
            start = time.perf_counter()
            fn(design)
            times[name].append(time.perf_counter() - start)
    base, mine = statistics.median(times["lstsq"]), statistics.median(times["linreg-flow"])
    print(f"exact fit, 1e6 x 8 with intercept, median of {repeats}: numpy lstsq {base:.3f} s, "
          f"linreg-flow (QR + double-double refinement + statistics) {mine:.3f} s, "
          f"ratio {mine / base:.2f}, extra {mine - base:.3f} s")
    return {"lstsq_s": base, "linreg_flow_s": mine, "ratio": mine / base}


if __name__ == "__main__":
    main()
