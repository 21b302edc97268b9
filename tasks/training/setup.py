"""How training is set up: device, training coordinates, step size, optimizer and initial weights.

The model trains on rows a = x N of the design X = [1, terms] (N: exact rationals, upper
triangular) against the target (y - y_shift) / y_scale, so its parameters theta map back exactly:
beta = y_scale N theta + y_shift e_0. Set-up reads no rows: the scalings come from the column
statistics and the curvature from the geometry (W = X T = Q R, computed once by validation). With
A = X N = W G, G = T^-1 N, the MSE Hessian is H = 2/n B^T B with B = R G, a p x p matrix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property

import numpy as np
import torch

from tasks.errors import UserInputError
from tasks.kernels import rational as rq
from tasks.kernels.affine import ColumnScaling, column_scaling, exact_map
from tasks.kernels.design import Design
from tasks.kernels.table import ColumnStats
from tasks.kernels.training_rows import RowMap
from tasks.kernels.tsqr import Geometry
from tasks.kernels.weights import Weighting


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
    def from_stats(cls, terms: ColumnStats, y: ColumnStats, intercept: bool, standardize: bool) -> Scaling:
        """Population standard deviations; without an intercept, nothing absorbs a shift: the root
        mean square, sqrt((m2 + n mean^2) / n)."""
        p = len(terms.mean)
        if not standardize:
            return cls(np.zeros(p), np.ones(p), 0.0, 1.0)
        x, t = column_scaling(terms, intercept, spread=True), column_scaling(y, intercept, spread=True)
        return cls(x.shift, x.scale, float(t.shift[0]), float(t.scale[0]))

    @classmethod
    def weighted(cls, weighting: Weighting, n: int, standardize: bool) -> Scaling:
        """A whitened design with the model's intercept (--weights): its constant column is s = sqrt(w),
        so the terms shift by their weighted means times s, x_std = (s x - s mean_w) / scale, and
        the target likewise; scale: sqrt(sum w (v - mean_w)^2 / n), so the columns have unit mean
        square over the n rows, as standardized columns do without weights."""
        q = len(weighting.means) - 1
        if not standardize:
            return cls(np.zeros(q), np.ones(q), 0.0, 1.0)
        mean, spread = np.array(weighting.means), np.sqrt(np.array(weighting.m2) / n)
        spread = np.where(spread > 0, spread, 1.0)
        return cls(mean[1:], spread[1:], float(mean[0]), float(spread[0]))

    def exact(self, intercept: bool) -> list[list[Fraction]]:
        """N with [1, terms] N = [1, x_std]: N_jj = 1 / scale_j, N_0j = -shift_j / scale_j."""
        return exact_map(ColumnScaling(self.x_shift, self.x_scale), Fraction(1) if intercept else None)


@dataclass(frozen=True)
class Coordinates:
    """What the model trains on. precondition: the orthonormal twin Z = sqrt(n) W R^-1 (its MSE
    Hessian is 2 I), whose constant column is the bias; else [1, x_std]. P (p, p): the float
    sqrt(n) R^-1 as used, None without precondition."""

    design: Design
    geometry: Geometry
    scaling: Scaling
    P: np.ndarray | None

    @property
    def k(self) -> int:
        """1 when the rows have a constant column: the intercept's, or s = sqrt(w) of a whitened design's."""
        return int(self.design.reports_intercept)

    @cached_property
    def row_map(self) -> RowMap:
        """How a block of raw rows becomes training rows [A y_std]."""
        s = self.scaling
        return RowMap(self.geometry.basis, s.x_shift, s.x_scale, s.y_shift, s.y_scale, self.P)

    @cached_property
    def N(self) -> list[list[Fraction]]:
        """Exact N with A = X N. Precondition: the columns of T P as used; the bias column is X's."""
        if self.P is None:
            return self.scaling.exact(bool(self.k))
        N = rq.matmul(self.geometry.basis.exact, rq.fractions(self.P))
        if self.k:
            for i, row in enumerate(N):
                row[0] = Fraction(int(i == 0))
        return N

    @cached_property
    def exact_B(self) -> list[list[Fraction]]:
        """B = R T^-1 N, exactly (for the float R)."""
        G = rq.matmul(rq.upper_inverse(self.geometry.basis.exact), self.N)
        return rq.matmul(rq.fractions(self.geometry.R), G)

    @cached_property
    def B(self) -> np.ndarray:
        return np.array(rq.to_float(self.exact_B))

    @cached_property
    def curvature(self) -> tuple[float, float]:
        """The largest and smallest eigenvalues of H = 2/n B^T B (the smallest at least 1e-16 L)."""
        s = np.linalg.svd(self.B, compute_uv=False)
        L = 2.0 * s[0] ** 2 / self.design.n
        return L, max(2.0 * s[-1] ** 2 / self.design.n, L * 1e-16)

    def to_original(self, theta: np.ndarray) -> np.ndarray:
        """beta = y_scale N theta + y_shift e_0 in exact rational arithmetic, rounded once (in float
        arithmetic where theta is not finite: a diverged run's parameters are NaN or inf there too)."""
        if not np.all(np.isfinite(theta)):
            with np.errstate(all="ignore"):
                beta = self.scaling.y_scale * (np.array(rq.to_float(self.N)) @ theta)
                return beta + np.eye(len(beta))[0] * (self.scaling.y_shift if self.k else 0.0)
        beta = rq.matvec(self.N, [Fraction(float(v)) for v in theta])
        ys, shift = Fraction(self.scaling.y_scale), Fraction(self.scaling.y_shift)
        return np.array([float(ys * b + (shift if i == 0 and self.k else 0)) for i, b in enumerate(beta)])


def training_coordinates(design: Design, geometry: Geometry, standardize: bool, precondition: bool) -> Coordinates:
    """The training coordinates; with precondition, the target's standardization still applies (the
    orthonormal twin replaces the design's)."""
    w = design.weighting
    scaling = (Scaling.weighted(w, design.n, standardize) if w is not None and w.intercept else
               Scaling.from_stats(geometry.terms, geometry.y, design.intercept, standardize))
    if not precondition:
        return Coordinates(design, geometry, scaling, None)
    root_n = Fraction(math.sqrt(design.n))
    P = [[root_n * v for v in row] for row in rq.upper_inverse(rq.fractions(geometry.R))]
    return Coordinates(design, geometry, scaling, np.array(rq.to_float(P)))


def auto_lr(coords: Coordinates, optimizer: str, batch_size: int | None) -> tuple[float, float | None]:
    """Step size (and momentum) from the spectrum of the MSE Hessian H = 2/n B^T B.

    sgd: 1/L, the largest step with monotone descent. momentum: the same step with Polyak's
    heavy-ball momentum ((sqrt k - 1) / (sqrt k + 1))^2, k = L / mu, capped at 0.9: Polyak's full
    optimum (lr 4 / (sqrt L + sqrt mu)^2, momentum near 1) sits on the stability boundary and
    amplifies rounding on ill-conditioned designs. Mini-batches add the largest one-row
    curvature 2 max ||a_i||^2 / b to L, with the row norms bounded from the statistics.
    """
    n = coords.design.n
    L, mu = coords.curvature
    if batch_size is not None and batch_size < n:
        L += 2.0 * coords.row_map.norm_bound(coords.design, coords.geometry.terms) / batch_size
    if optimizer == "momentum":
        root = math.sqrt(L / mu)
        return 1.0 / L, min(0.9, ((root - 1) / (root + 1)) ** 2)
    if optimizer == "adam":
        return 1e-2, None  # Adam's steps are about lr in size, whatever the curvature.
    if optimizer == "lbfgs":
        return 1.0, None  # the strong-Wolfe line search picks the step length
    return 1.0 / L, None


def make_optimizer(name: str, params, lr: float, momentum: float | None) -> torch.optim.Optimizer:
    """momentum, adam or lbfgs (plain sgd steps in place, as torch.optim.SGD would: train_sgd)."""
    if name == "momentum":
        return torch.optim.SGD(params, lr=lr, momentum=0.9 if momentum is None else momentum)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    # One L-BFGS iteration per epoch; our own stop rule decides when to stop.
    # max_eval must be set: with max_iter=1 torch would allow the line search a single evaluation.
    return torch.optim.LBFGS(params, lr=lr, max_iter=1, max_eval=25, history_size=20, tolerance_grad=0.0,
                             tolerance_change=0.0, line_search_fn="strong_wolfe")


def flat_linear(p: int, intercept: bool, generator: torch.Generator, dtype: torch.dtype,
                device: torch.device) -> tuple[torch.Tensor, torch.Tensor, list[torch.nn.Parameter]]:
    """theta_y = [bias, weight, -1] (p + 1,) and a gradient buffer (p,), with an nn.Linear's
    parameters [weight, bias] and their .grad as views into them: torch.optim steps and in-place
    updates act on theta = theta_y[:p], and [A y] theta_y = A theta - y is one product."""
    k = int(intercept)
    model = init_linear(p - k, intercept, generator, dtype)
    weight = model.weight.detach()[0]
    theta_y = torch.cat([model.bias.detach(), weight] if k else [weight]).to(device)
    theta_y = torch.cat([theta_y, -torch.ones(1, dtype=dtype, device=device)])
    grad = torch.zeros(p, dtype=dtype, device=device)
    params = [torch.nn.Parameter(theta_y[k:p].view(1, p - k))] + ([torch.nn.Parameter(theta_y[:1])] if k else [])
    params[0].grad = grad[k:].view(1, p - k)
    if k:
        params[1].grad = grad[:1]
    return theta_y, grad, params


def init_linear(p: int, intercept: bool, generator: torch.Generator, dtype: torch.dtype) -> torch.nn.Linear:
    """torch's own default init for nn.Linear, U(-1/sqrt(p), 1/sqrt(p)), drawn from a local generator."""
    model = torch.nn.Linear(p, 1, bias=intercept, dtype=dtype)
    with torch.no_grad():
        torch.nn.init.kaiming_uniform_(model.weight, a=math.sqrt(5), generator=generator)
        if intercept:
            bound = 1.0 / math.sqrt(p)
            torch.nn.init.uniform_(model.bias, -bound, bound, generator=generator)
    return model
