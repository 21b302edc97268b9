"""Small matrices in exact rational arithmetic (fractions.Fraction): the p x p side of the exact fit."""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

Matrix = Sequence[Sequence[Fraction]]


def fractions(A) -> list[list[Fraction]]:
    """A float matrix (or one that already holds Fractions) as exact rationals."""
    return [[v if isinstance(v, Fraction) else Fraction(float(v)) for v in row] for row in A]


def to_float(A: Matrix) -> list[list[float]]:
    return [[float(v) for v in row] for row in A]


def matmul(A: Matrix, B: Matrix) -> list[list[Fraction]]:
    """A @ B, exactly."""
    return [[sum((a * B[k][j] for k, a in enumerate(row) if a), Fraction(0)) for j in range(len(B[0]))]
            for row in A]


def matvec(A: Matrix, v: Sequence[Fraction], transpose: bool = False) -> list[Fraction]:
    """A @ v (or A^T @ v), exactly."""
    if transpose:
        return [sum((A[i][j] * v[i] for i in range(len(A))), Fraction(0)) for j in range(len(A[0]))]
    return [sum((a * x for a, x in zip(row, v)), Fraction(0)) for row in A]


def upper_inverse(T: Matrix) -> list[list[Fraction]]:
    """Exact inverse of an upper-triangular rational matrix (back substitution)."""
    p = len(T)
    inv = [[Fraction(0)] * p for _ in range(p)]
    for j in range(p):
        for i in range(j, -1, -1):
            acc = Fraction(int(i == j)) - sum((T[i][k] * inv[k][j] for k in range(i + 1, j + 1)), Fraction(0))
            inv[i][j] = acc / T[i][i]
    return inv
