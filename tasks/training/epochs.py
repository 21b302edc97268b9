"""One epoch of training, one strategy per mode; each returns n times the loss before its step.

Every strategy runs under torch.no_grad with the gradient taken by hand into `grad` (the rows
object computes g = 2/n A^T (A theta - y) with the loss as its by-product, tasks/kernels/
training_rows.py); what differs is how the step is taken:
- `plain`: full batch, p -= lr g in place, as torch.optim.SGD does;
- `FullBatch`: full batch, a torch.optim step (momentum, adam);
- `LBFGS`: full batch, torch's L-BFGS with a closure, restarted when its line search is stuck;
- `MiniBatch`: shuffled blocks of shuffled rows, any optimizer; None when the deadline passes
  mid-epoch.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch

# L-BFGS near the optimum of an ill-conditioned design: the loss changes below its own float
# resolution, so a line search comparing rounded losses stalls; the closure returns the loss less
# its value at the step's start, 2 r.s + s.s (s = A step), exact where that difference is noise.
# And torch keeps a curvature pair only when y.s > TORCH_PAIR_MIN, an absolute threshold under which
# every pair falls there, leaving a stale memory: the objective is scaled by LBFGS_PAIRS / lambda_min
# (the Hessian's smallest eigenvalue), so pairs count down to steps of 1e-10 in every direction; and
# at each restart (below) by at least LBFGS_PAIRS * TORCH_PAIR_MIN * L / |g|^2 (L the largest
# eigenvalue, g the gradient there), so that the steepest-descent step s = g / L it restarts from, of
# y.s >= |g|^2 / L, and steps 1e5 times shorter still count: near the optimum those steps are far
# below 1e-10 (macrodata on one BLAS path: 1e-13, every pair refused, 7000 epochs of steepest
# descent from 2.5e-8 to 3e-10 instead of a few L-BFGS steps).
LBFGS_PAIRS = 1e10
TORCH_PAIR_MIN = 1e-10  # torch.optim.LBFGS's "if ys > 1e-10" (torch 2.x)


@dataclass(frozen=True)
class LBFGSScale:
    """The L-BFGS objective's scale (see LBFGS_PAIRS): `initial`, never above `ceiling` (the square
    root of the dtype's largest value); `largest` the Hessian's largest eigenvalue L."""

    initial: float
    largest: float
    ceiling: float

    def at_restart(self, scale: float, g2: float) -> float:
        """The scale for a restart from steepest descent at a gradient of squared norm g2 (unscaled):
        never smaller than the current one."""
        wanted = LBFGS_PAIRS * TORCH_PAIR_MIN * self.largest / g2 if g2 > 0 else self.ceiling
        return min(self.ceiling, max(scale, wanted))


Epoch = Callable[[], "torch.Tensor | None"]


@dataclass(frozen=True)
class Model:
    """What every strategy works on: theta_y = [theta, -1] (so that [A y] @ theta_y is the residual),
    theta its first p entries, grad the gradient buffer, opt the torch optimizer (None: plain
    SGD), data the rows (HeldRows or StreamedRows), n the row count."""

    data: object
    theta_y: torch.Tensor
    grad: torch.Tensor
    opt: torch.optim.Optimizer | None
    lr: float
    n: int

    @property
    def theta(self) -> torch.Tensor:
        return self.theta_y[:-1]


def plain(model: Model) -> Epoch:
    return partial(model.data.descend, model.lr)


class FullBatch:
    """One torch.optim step on all rows."""

    def __init__(self, model: Model) -> None:
        self.model = model

    def __call__(self) -> torch.Tensor:
        total = self.model.data.full()
        self.model.opt.step()
        return total


class LBFGS:
    """torch's L-BFGS on all rows, on the objective scaled by `self.scale` (see LBFGS_PAIRS).

    When its line search finds no step (a step of 0), torch's L-BFGS keeps its memory and gradient
    and takes the same step of 0 at every later epoch: stuck for good (Filip: 1.07 from the optimum
    on one BLAS kernel path, 6e-9 on others). Then its memory is cleared, as L-BFGS codes do on a
    failed line search, and it restarts from steepest descent on an objective scaled so that the
    restart's short steps still make pairs (LBFGSScale.at_restart); if that first step overflows
    (float32 at its floor), it is undone (memory and scale) and restarts end.
    """

    def __init__(self, model: Model, scaling: LBFGSScale) -> None:
        self.model, self.scaling, self.scale = model, scaling, scaling.initial
        # the memory and scale before a restart, while its first step is pending
        self.saved: tuple[dict, float] | None = None
        self.restarts = True  # whether restarts are still allowed

    def __call__(self) -> torch.Tensor:
        model, opt, theta = self.model, self.model.opt, self.model.theta
        ref, first, g2 = theta.clone(), [], []

        def closure() -> torch.Tensor:
            """Sets the gradient; returns the loss less its value at the step's start (torch calls
            the closure there first), both times `scale`."""
            if first:
                total = model.data.relative(ref)
            else:
                first.append(model.data.full())
                g2.append(model.grad.square().sum())  # at the step's start, unscaled
                total = torch.zeros((), dtype=theta.dtype, device=theta.device)
            model.grad.mul_(self.scale)
            return total * (self.scale / model.n)

        opt.step(closure)
        if self.saved is not None and not bool(torch.isfinite(theta).all()):
            theta.copy_(ref)  # undo the restart's first step, restore the memory, restart no more
            opt.state.clear()
            opt.state.update(self.saved[0])
            self.scale, self.saved, self.restarts = self.saved[1], None, False
        elif self.saved is None and self.restarts and torch.equal(theta, ref):
            self.saved = {k: copy.deepcopy(v) for k, v in opt.state.items()}, self.scale
            opt.state.clear()
            self.scale = self.scaling.at_restart(self.scale, float(g2[0]))
        else:
            self.saved = None  # the restart's first step went through (or there was none)
        return first[0]


class MiniBatch:
    """One pass in mini-batches of `batch` rows: the sum of the batches' squared errors. None when
    the deadline passed mid-epoch (the steps taken stay, the partial loss is dropped)."""

    def __init__(self, model: Model, batch: int, generator: torch.Generator, lbfgs: bool, deadline: float,
                 clock: Callable[[], float]) -> None:
        self.model, self.batch, self.generator = model, batch, generator
        self.lbfgs, self.deadline, self.clock = lbfgs, deadline, clock

    def __call__(self) -> torch.Tensor | None:
        model, theta, grad = self.model, self.model.theta, self.model.grad
        total = torch.zeros((), dtype=theta.dtype, device=theta.device)
        for i, Ay in enumerate(model.data.batches(self.generator, self.batch)):
            if i and self.clock() >= self.deadline:
                return None

            def loss() -> torch.Tensor:  # the batch's MSE; its gradient into grad
                r = Ay @ model.theta_y
                # [A y]^T r, a gemv on the transposed rows (a slice A^T would be copied: the batch
                # again), of which the last entry (y^T r) is dropped
                torch.mul(torch.mv(Ay.t(), r)[:-1], 2 / len(r), out=grad)
                return torch.dot(r, r) / len(r)

            if self.lbfgs:
                total += model.opt.step(loss) * len(Ay)
            else:
                total += loss() * len(Ay)
                theta.add_(grad, alpha=-model.lr) if model.opt is None else model.opt.step()
        return total


def strategy(model: Model, optimizer: str, batch: int | None, generator: torch.Generator,
             lbfgs: LBFGSScale | None, deadline: float, clock: Callable[[], float]) -> Epoch:
    """The epoch function for this optimizer and batch size (None: full batch); clock() is read
    against the deadline (time.monotonic)."""
    if batch is not None:
        return MiniBatch(model, batch, generator, optimizer == "lbfgs", deadline, clock)
    if model.opt is None:
        return plain(model)
    return LBFGS(model, lbfgs) if optimizer == "lbfgs" else FullBatch(model)
