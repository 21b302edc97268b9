"""Exact step: the least-squares fit in closed form, with its standard statistics."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np
from prefect import task

from tasks.design import Design, scaled_basis

# Above this condition number of the scaled design, coefficients are very sensitive to the data.
ILL_CONDITIONED = 1e8


class IllConditionedWarning(UserWarning):
    """The design is nearly rank deficient: the fit is exact for this data but fragile."""


@dataclass(frozen=True)
class ExactFit:
    """The least-squares solution and its statistics; coefficients on the data's original scale."""

    intercept: float | None
    coefficients: tuple[float, ...]
    se_intercept: float | None
    se_coefficients: tuple[float, ...]
    r_squared: float
    adj_r_squared: float
    residual_std: float
    rss: float
    mse: float
    dof: int
    # 2-norm condition number of the raw design [1, terms] and of its centered/scaled twin.
    condition_number: float
    condition_number_scaled: float
    seconds: float = 0.0

    @property
    def params(self) -> np.ndarray:
        """(n_params,) intercept first (when there is one), then the coefficients."""
        head = () if self.intercept is None else (self.intercept,)
        return np.array(head + self.coefficients)


def closed_form_line(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """The tutorial's centered formula for y = b0 + b1 x.

    b1 = sum((x - mean x)(y - mean y)) / sum((x - mean x)^2),  b0 = mean y - b1 mean x
    """
    xm, ym = x.mean(), y.mean()
    dx = x - xm
    b1 = float(np.dot(dx, y - ym) / np.dot(dx, dx))
    return float(ym - b1 * xm), b1


def solve(design: Design) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares parameters (n_params,) and the inverse Gram factor M (n_params, n_params).

    theta = argmin ||y - X theta||, solved by QR on a well-conditioned basis W = X T:
    c = R^-1 Q^T y, theta = T c; (X^T X)^-1 = T R^-1 R^-T T^T = M M^T with M = T R^-1.
    """
    basis = scaled_basis(design)
    Q, R = np.linalg.qr(basis.W)
    M = basis.to_params @ np.linalg.inv(R)
    if design.degree == 1 and design.intercept and len(design.names) == 1:
        theta = np.array(closed_form_line(design.features[:, 0], design.y))
    else:
        theta = basis.to_params @ np.linalg.solve(R, Q.T @ design.y)
    return theta, M


def fit_exact(design: Design) -> ExactFit:
    """Fit the design exactly and compute standard errors, R^2 and condition numbers."""
    start = time.perf_counter()
    theta, M = solve(design)
    X = design.matrix()
    residual = design.y - X @ theta
    n, p = design.n, design.n_params
    rss = float(np.dot(residual, residual))
    dof = n - p
    sigma2 = rss / dof
    se = np.sqrt(sigma2 * np.einsum("ij,ij->i", M, M))
    y = design.y
    # NIST and statsmodels: without an intercept, R^2 is the uncentered 1 - RSS / sum(y^2).
    tss = float(np.sum((y - y.mean()) ** 2)) if design.intercept else float(np.dot(y, y))
    r2 = 1.0 - rss / tss if tss > 0 else float("nan")
    adj = 1.0 - (1.0 - r2) * (n - int(design.intercept)) / dof
    cond_scaled = float(np.linalg.cond(_standardized(X, design.intercept)))
    if cond_scaled > ILL_CONDITIONED:
        warnings.warn(
            f"the design is ill-conditioned (condition number {cond_scaled:.3g} after scaling): "
            "the coefficients are exact for this data but very sensitive to it",
            IllConditionedWarning,
            stacklevel=2,
        )
    k = int(design.intercept)
    return ExactFit(
        intercept=float(theta[0]) if design.intercept else None,
        coefficients=tuple(float(v) for v in theta[k:]),
        se_intercept=float(se[0]) if design.intercept else None,
        se_coefficients=tuple(float(v) for v in se[k:]),
        r_squared=float(r2),
        adj_r_squared=float(adj),
        residual_std=float(np.sqrt(sigma2)),
        rss=rss,
        mse=rss / n,
        dof=dof,
        condition_number=float(np.linalg.cond(X)),
        condition_number_scaled=cond_scaled,
        seconds=time.perf_counter() - start,
    )


def _standardized(X: np.ndarray, intercept: bool) -> np.ndarray:
    """Columns centered (with an intercept) and scaled to unit norm; the intercept column kept."""
    if intercept:
        T = X[:, 1:] - X[:, 1:].mean(axis=0)
        T = T / np.linalg.norm(T, axis=0)
        return np.column_stack([np.full(len(X), 1 / np.sqrt(len(X))), T])
    return X / np.linalg.norm(X, axis=0)


@task(name="fit-exact")
def fit_exact_task(design: Design) -> ExactFit:
    """Solve the least-squares problem exactly."""
    return fit_exact(design)
