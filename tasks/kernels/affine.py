"""The one column-scaling rule, its exact affine map, and the one parameter order.

With an intercept a column v becomes (v - mean) / s, s from its centered sum of squares m2; without
one, v / s, s from its raw sum of squares m2 + n mean^2 (nothing absorbs a shift); a zero s becomes 1.
s is the norm sqrt(ss) (every column of norm 1: the exact fit's well-conditioned basis and the
condition number of the scaled design) or the spread sqrt(ss / n) (the population standard
deviation, or the root mean square without an intercept: training's standardization).

Parameters are always ordered intercept first (when there is one), then the terms' coefficients.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from tasks.kernels.table import ColumnStats


@dataclass(frozen=True)
class ColumnScaling:
    """Columns v -> (v - shift) / scale."""

    shift: np.ndarray
    scale: np.ndarray


def column_scaling(stats: ColumnStats, intercept: bool, spread: bool = False) -> ColumnScaling:
    """The rule above for the columns of stats: by the norm, or by the spread (divided by sqrt(n))."""
    ss = stats.m2 if intercept else stats.m2 + stats.count * stats.mean**2
    scale = np.sqrt(ss / stats.count) if spread else np.sqrt(ss)
    scale = np.where(scale > 0, scale, 1.0)
    shift = stats.mean.copy() if intercept else np.zeros(len(stats.mean))
    return ColumnScaling(shift, scale)


def exact_map(scaling: ColumnScaling, ones: Fraction | None) -> list[list[Fraction]]:
    """The (p, p) rationals T taking parameters c on the scaled columns [ones, (v - shift) / scale]
    to parameters on [1, v]: beta = T c, T_jj = 1 / scale_j, T_0j = -shift_j / scale_j, T_00 = ones
    (ones None: no intercept, no first row and column). Shifts and scales enter as the exact values
    of their floats, so the map is exact."""
    k, q = int(ones is not None), len(scaling.scale)
    T = [[Fraction(int(i == j)) for j in range(q + k)] for i in range(q + k)]
    for j in range(q):
        T[k + j][k + j] = 1 / Fraction(float(scaling.scale[j]))
        if k:
            T[0][k + j] = -Fraction(float(scaling.shift[j])) / Fraction(float(scaling.scale[j]))
    if k:
        T[0][0] = ones
    return T


def parameter_vector(intercept: float | None, coefficients: tuple) -> np.ndarray:
    """[intercept, coefficients...] (intercept None: the coefficients alone)."""
    return np.array((() if intercept is None else (intercept,)) + tuple(coefficients))
