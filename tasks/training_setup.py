"""How training is set up: device, scaling, step size, optimizer and initial weights."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from tasks.errors import UserInputError


def resolve_device(device: str) -> torch.device:
    """'auto' is CUDA when torch sees a GPU, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserInputError("option --device cuda: torch sees no CUDA device here; use --device cpu or auto")
    return torch.device(device)


@dataclass(frozen=True)
class Scaling:
    """x_std = (x - x_shift) / x_scale and y_std = (y - y_shift) / y_scale."""

    x_shift: np.ndarray
    x_scale: np.ndarray
    y_shift: float
    y_scale: float

    @classmethod
    def fit(cls, X: np.ndarray, y: np.ndarray, intercept: bool, standardize: bool) -> "Scaling":
        p = X.shape[1]
        if not standardize:
            return cls(np.zeros(p), np.ones(p), 0.0, 1.0)
        # Without an intercept there is nothing to absorb a shift: scale by the root mean square.
        x_shift = X.mean(axis=0) if intercept else np.zeros(p)
        y_shift = float(y.mean()) if intercept else 0.0
        x_scale = np.sqrt(np.mean((X - x_shift) ** 2, axis=0))
        y_scale = float(np.sqrt(np.mean((y - y_shift) ** 2)))
        x_scale[x_scale == 0] = 1.0
        return cls(x_shift, x_scale, y_shift, y_scale or 1.0)

    def to_original(self, weight: np.ndarray, bias: float | None) -> tuple[float | None, np.ndarray]:
        """y = y_shift + y_scale (b' + sum w'_j (x_j - shift_j) / scale_j) -> (b0, b)."""
        coef = self.y_scale * weight / self.x_scale
        if bias is None:
            return None, coef
        return float(self.y_shift + self.y_scale * bias - np.dot(coef, self.x_shift)), coef


def auto_lr(A: np.ndarray, optimizer: str, batch_size: int | None) -> tuple[float, float | None]:
    """Step size (and momentum) from the spectrum of the MSE Hessian H = 2/n A^T A.

    sgd: 1/L, the largest step with monotone descent. momentum: the same step with Polyak's
    heavy-ball momentum ((sqrt k - 1) / (sqrt k + 1))^2, k = L / mu, capped at 0.9: Polyak's full
    optimum (lr 4 / (sqrt L + sqrt mu)^2, momentum near 1) sits on the stability boundary and
    amplifies rounding on ill-conditioned designs. Mini-batches add the largest one-row
    curvature 2 max ||a_i||^2 / b to L.
    """
    n = A.shape[0]
    s = np.linalg.svd(A, compute_uv=False)
    L = 2.0 * s[0] ** 2 / n
    mu = max(2.0 * s[-1] ** 2 / n, L * 1e-16)
    if batch_size is not None and batch_size < n:
        L += 2.0 * float(np.max(np.einsum("ij,ij->i", A, A))) / batch_size
    if optimizer == "momentum":
        root = math.sqrt(L / mu)
        return 1.0 / L, min(0.9, ((root - 1) / (root + 1)) ** 2)
    if optimizer == "adam":
        return 1e-2, None  # Adam's steps are about lr in size, whatever the curvature.
    if optimizer == "lbfgs":
        return 1.0, None  # the strong-Wolfe line search picks the step length
    return 1.0 / L, None


def make_optimizer(name: str, params, lr: float, momentum: float | None) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    if name == "momentum":
        return torch.optim.SGD(params, lr=lr, momentum=0.9 if momentum is None else momentum)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    # One L-BFGS iteration per epoch; our own tol decides when to stop.
    # max_eval must be set: with max_iter=1 torch would allow the line search a single evaluation.
    return torch.optim.LBFGS(params, lr=lr, max_iter=1, max_eval=25, history_size=20, tolerance_grad=0.0,
                             tolerance_change=0.0, line_search_fn="strong_wolfe")


def init_linear(p: int, intercept: bool, generator: torch.Generator, dtype: torch.dtype) -> torch.nn.Linear:
    """torch's own default init for nn.Linear, U(-1/sqrt(p), 1/sqrt(p)), drawn from a local generator."""
    model = torch.nn.Linear(p, 1, bias=intercept, dtype=dtype)
    with torch.no_grad():
        torch.nn.init.kaiming_uniform_(model.weight, a=math.sqrt(5), generator=generator)
        if intercept:
            bound = 1.0 / math.sqrt(p)
            torch.nn.init.uniform_(model.bias, -bound, bound, generator=generator)
    return model
