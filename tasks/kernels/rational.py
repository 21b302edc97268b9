"""Small matrices in exact rational arithmetic (fractions.Fraction): the p x p side of the exact fit."""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

Matrix = Sequence[Sequence[Fraction]]


def fractions(A) -> list[list[Fraction]]:
    """A float matrix (or one that already holds Fractions) as exact rationals."""
    return [[v if isinstance(v, Fraction) else Fraction(float(v)) for v in row] for row in A]


def to_float(A: Matrix) -> list[list[float]]:
    return [[float(v) for v in row] for row in A]


def over_one_denominator(values: Sequence[Fraction]) -> tuple[list[int], int]:
    """values as integer numerators over their least common denominator."""
    d = math.lcm(*(v.denominator for v in values)) if values else 1
    return [v.numerator * (d // v.denominator) for v in values], d


def matmul(A: Matrix, B: Matrix) -> list[list[Fraction]]:
    """A @ B, exactly: each row of A and each column of B as integers over one denominator, so the
    p^3 products are integer ones and each entry is normalized once (not p times, as Fraction sums do)."""
    rows = [over_one_denominator([Fraction(v) for v in row]) for row in A]
    cols = [over_one_denominator([Fraction(v) for v in col]) for col in zip(*B)]
    return [[Fraction(sum(x * y for x, y in zip(u, v) if x), du * dv) for v, dv in cols] for u, du in rows]


def matvec(A: Matrix, v: Sequence[Fraction], transpose: bool = False) -> list[Fraction]:
    """A @ v (or A^T @ v), exactly."""
    if transpose:
        return [sum((A[i][j] * v[i] for i in range(len(A))), Fraction(0)) for j in range(len(A[0]))]
    return [sum((a * x for a, x in zip(row, v)), Fraction(0)) for row in A]


def upper_inverse(T: Matrix) -> list[list[Fraction]]:
    """Exact inverse of an upper-triangular rational matrix (back substitution; zeros skipped, so a
    sparse map such as a column scaling costs O(p^2))."""
    p = len(T)
    inv = [[Fraction(0)] * p for _ in range(p)]
    for j in range(p):
        for i in range(j, -1, -1):
            acc = Fraction(int(i == j)) - sum((T[i][k] * inv[k][j] for k in range(i + 1, j + 1)
                                               if T[i][k] and inv[k][j]), Fraction(0))
            inv[i][j] = acc / T[i][i]
    return inv
