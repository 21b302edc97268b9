"""When training has converged or diverged: the Newton estimate of the distance to the optimum.

The MSE is quadratic, so the Newton step H^-1 g of the gradient at theta is theta - theta* exactly;
mapped to the original parameters it is K g (K from the geometry, p x p), and max_j |(K g)_j| /
|beta*_j| estimates the max relative distance to the exact fit without knowing that fit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from functools import cached_property

import numpy as np
import torch

from tasks.kernels import rational as rq
from tasks.kernels.training_rows import TrainingRows
from tasks.training.setup import Coordinates

# Stop once the estimated distance to the optimum is this fraction of the verdict's tolerance: four
# digits to spare cost a linearly converging optimizer log(1e4) / its rate, a superlinear one a
# step, and bring L-BFGS to 1e-10 of the exact fit where float64 allows it.
MARGIN = 1e-4
# Or at a floor, where the distance estimate set no new best in the second half of the run (a
# slow optimizer still sets some): when it is within NEAR of the tolerance (the arithmetic allows no
# more digits), or when the best loss also improved by <= tol over PATIENCE epochs (one flat step,
# e.g. at a turning point of heavy-ball momentum, is not a floor) and the distance is one that the
# rounding of the gradient can account for (StopRule.rounding_distance); an optimizer stalled
# farther out (Adam's fixed steps) runs on.
NEAR = 0.1
PATIENCE = 100
# Standard deviations of the rounding noise in the distance estimate that still count as noise.
NOISE_SIGMAS = 4.0
# Training has diverged when the loss is not finite or grew by this factor over the first loss.
EXPLODED = 1e12


def newton_map(coords: Coordinates) -> np.ndarray:
    """K (p, p): the Newton step H^-1 g of a training gradient g, in the original parameters, is
    K g. With N B^-1 = T R^-1: K = y_scale n/2 T R^-1 B^-T, in exact rationals, rounded. As
    B = R T^-1 N, B^-1 = N^-1 T R^-1 and K = y_scale n/2 (X^T X)^-1 N^-T: the fit's inverse Gram
    (Geometry.inverse_gram, formed once) times N^-T, a column scaling unless preconditioned, so
    that no product of two dense rational matrices is formed (at 57 parameters it held 100 MiB of
    big integers)."""
    G = coords.geometry.inverse_gram()
    factor = Fraction(coords.scaling.y_scale) * Fraction(coords.design.n, 2)
    # K^T = N^-1 G (G is symmetric), with N^-1 on the left: its zeros are skipped row by row
    Ninv = [[factor * v for v in row] for row in rq.upper_inverse(coords.N)]
    return np.array(rq.to_float(rq.matmul(Ninv, G))).T


@dataclass
class StopRule:
    """What the checks remember between chunks of epochs: the first loss, the best-so-far losses of
    the last PATIENCE epochs, and the best distance estimate and the epoch it was reached.
    tol: TrainConfig.tol; rtol: the verdict's relative tolerance."""

    coords: Coordinates
    tol: float
    rtol: float
    first: float | None = None
    tail: np.ndarray = field(default_factory=lambda: np.empty(0))
    best: float = math.inf
    best_at: int = 0

    @cached_property
    def newton(self) -> np.ndarray:
        return newton_map(self.coords)

    @cached_property
    def optimum_scale(self) -> np.ndarray:
        """|beta*| from the geometry's float64 least-squares solution: the scale a relative
        distance to the optimum is measured against."""
        return np.abs(self.coords.geometry.initial_solution())

    def diverged_at(self, chunk: np.ndarray) -> int | None:
        """The first epoch of the chunk (losses (m,)) whose loss is not finite or exploded, if any."""
        self.first = chunk[0] if self.first is None else self.first
        bad = np.flatnonzero(~np.isfinite(chunk) | (chunk > EXPLODED * max(self.first, 1e-300)))
        return int(bad[0]) if bad.size else None

    def distance(self, data: TrainingRows, last: bool = False) -> tuple[float, float]:
        """The MSE (training units) at theta and the estimated max relative distance of its original
        parameters to the optimum, |K g| / |beta*|. last: training ends after this check, so the
        pass also gathers what rounding_distance needs (one pass instead of two on streamed rows)."""
        total = data.full(self.newton if last else None)
        host = torch.cat([total.reshape(1), data.grad]).double().cpu().numpy()  # one host sync
        with np.errstate(divide="ignore", invalid="ignore"):
            distance = float(np.max(np.abs(self.newton @ host[1:]) / self.optimum_scale))
        return float(host[0]) / data.n, distance if math.isfinite(distance) else math.inf

    def rounding_distance(self, data: TrainingRows) -> float:
        """How large a distance estimate rounding alone produces: rounding (unit u) each residual
        r_i (by about u e_i, e_i = |a_i| |theta| + |y_i|; it also stands for the rounding of the rows
        themselves) and each product a_ij r_i of g = 2/n A^T r moves K g by independent errors of
        variance u^2 (2/n)^2 (sum_i (K a_i)^2 e_i^2 + K^2 sum_i a_i^2 r_i^2); the estimate is NOISE_SIGMAS
        standard deviations of that, times sqrt(log2 n) for the depth of the sums; plus the rounding of the
        product K g itself, at the gradient in data.grad (that of self.distance). A worst case
        (|K| |A|^T e) would be 1e10 times too large on Filip and let a stalled run stop far out."""
        u = torch.finfo(data.grad.dtype).eps / 2
        residual, products = data.rounding(self.newton)
        variance = residual + np.square(self.newton) @ products
        spread = NOISE_SIGMAS * math.sqrt(math.log2(max(data.n, 2)))
        g = np.abs(data.grad.double().cpu().numpy())
        # The product K g in float64 is exact to gamma_p |K| |g| (K has entries of both signs).
        gamma = len(g) * np.finfo(np.float64).eps
        with np.errstate(divide="ignore", invalid="ignore"):
            noise = spread * u * (2 / data.n) * np.sqrt(variance) + gamma * (np.abs(self.newton) @ g)
            return float(np.max(noise / self.optimum_scale))

    def _loss_flat(self, chunk: np.ndarray) -> bool:
        """Whether the best loss so far improved by <= tol (relative) over PATIENCE epochs somewhere
        in the chunk: best_{k-PATIENCE} - best_k <= tol * best_k (a few ulps of noise around the
        minimum are no progress)."""
        start = self.tail[-1:] if self.tail.size else chunk[:1]
        seq = np.concatenate([self.tail, np.minimum.accumulate(np.concatenate([start, chunk]))[1:]])
        k = np.arange(len(self.tail), len(seq))
        k = k[k >= PATIENCE]
        self.tail = seq[-PATIENCE:]
        return bool(np.any(seq[k - PATIENCE] - seq[k] <= self.tol * np.abs(seq[k])))

    def converged(self, chunk: np.ndarray, distance: float, done: int, data: TrainingRows) -> bool:
        """The stop rule after `done` epochs (chunk: their latest losses (m,), distance: from
        self.distance): the estimate within MARGIN of rtol, or a floor (see NEAR)."""
        flat = self._loss_flat(chunk)
        if distance < self.best:
            self.best, self.best_at = distance, done
        stalled = 2 * self.best_at <= done
        floor = stalled and (distance <= NEAR * self.rtol or (flat and distance <= self.rounding_distance(data)))
        return distance <= MARGIN * self.rtol or floor
