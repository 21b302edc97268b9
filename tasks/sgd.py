"""SGD step: train torch.nn.Linear with a torch optimizer on the same design, fast and streamed.

The MSE gradient is taken by hand under torch.no_grad, g = 2/n A^T (A theta - y), with the loss of
the parameters before the step as its by-product; plain sgd updates in place as torch.optim.SGD
does (p -= lr g), momentum, adam and lbfgs get p.grad and their own torch.optim step. A design
within MEMORY_BUDGET is held as device tensors built block by block; a larger one streams: a
full-batch epoch is one pass over the blocks, a mini-batch epoch visits shuffled blocks with
shuffled rows.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch
from prefect import get_run_logger, task

from tasks.config import TrainConfig
from tasks.kernels.design import Design
from tasks.kernels.tsqr import Geometry, design_geometry
from tasks.training_setup import (Coordinates, auto_lr, flat_linear, init_linear, make_optimizer, resolve_device,
                                  training_coordinates)

__all__ = ["SGDResult", "init_linear", "resolve_device", "train_sgd", "train_sgd_task"]

# Epochs between host syncs: the loss of every epoch stays on the device until then. The first
# checks come after 1, 2, 4, ... epochs, so a fit that converges at once stops at once.
CHUNK = 256
# Stop once the estimated distance to the optimum is this fraction of the verdict's tolerance: four
# digits to spare cost a linearly converging optimizer log(1e4) / its rate, a superlinear one a
# step, and bring L-BFGS to 1e-10 of the exact fit where float64 allows it.
MARGIN = 1e-4
# Or at a floor, where the distance estimate set no new best in the second half of the run (a
# slow optimizer still sets some): when it is within NEAR of the tolerance (the arithmetic allows no
# more digits), or when the best loss also improved by <= tol over PATIENCE epochs (one flat step,
# e.g. at a turning point of heavy-ball momentum, is not a floor) and the distance is one that the
# rounding of the gradient can account for (_rounding_distance); an optimizer stalled farther out
# (Adam's fixed steps) runs on.
NEAR = 0.1
PATIENCE = 100
# Training has diverged when the loss is not finite or grew by this factor over the first loss.
EXPLODED = 1e12
# L-BFGS near the optimum of an ill-conditioned design: the loss changes below its own float
# resolution, so a line search comparing rounded losses stalls; the closure returns the loss less
# its value at the step's start, 2 r.s + s.s (s = A step), exact where that difference is noise.
# And torch keeps a curvature pair only when y.s > 1e-10, an absolute threshold under which every
# pair falls there, leaving a stale memory: the objective is scaled by LBFGS_PAIRS / lambda_min
# (the Hessian's smallest eigenvalue), so pairs count down to steps of 1e-10 in every direction.
LBFGS_PAIRS = 1e10
# Designs up to this many rows keep the residuals of a chunk of epochs (_Held.ring).
RING_ROWS = 4096
# Training tensors up to this size are held on the device; larger designs stream.
MEMORY_BUDGET = 256 * 2**20

Progress = Callable[..., None]


@dataclass(frozen=True)
class SGDResult:
    """What training reached; coefficients mapped back to the data's original scale.

    losses: (epochs,) full-data MSE in the target's original units, one per epoch run.
    stop_reason: why training ended:
      "tol"       converged (TrainConfig.tol): the estimated distance to the optimum is within
                  MARGIN of the verdict's tolerance, or the estimate no longer improves and is
                  within NEAR of it, or at the noise floor of the arithmetic;
      "epochs"    the epoch budget ran out;
      "diverged"  the loss became non-finite or exploded;
      "timeout"   the time limit (time_limit seconds, TrainConfig.timeout) passed; the parameters
                  are those reached, and a mini-batch epoch cut short is not counted in epochs.
    time_limit: the time limit training ran under, in seconds; None: none.
    distance: the last estimate of max_j |beta_j - beta*_j| / |beta*_j|, from the Newton step of
      the gradient at the final parameters; None when not measured (tol 0).
    """

    intercept: float | None
    coefficients: tuple[float, ...]
    epochs: int
    final_loss: float
    stop_reason: str
    optimizer: str
    lr: float
    momentum: float | None
    losses: np.ndarray
    device: str
    dtype: str
    seconds: float = 0.0
    time_limit: float | None = None
    distance: float | None = None
    precondition: bool = False

    @property
    def diverged(self) -> bool:
        return self.stop_reason == "diverged"

    @property
    def params(self) -> np.ndarray:
        head = () if self.intercept is None else (self.intercept,)
        return np.array(head + self.coefficients)


class _Held:
    """The training rows on the device, filled one block at a time: Ay = [A y] (n, p + 1), so that
    r = Ay theta_y = A theta - y is one product, and G = 2/n A^T (p, n) so the gradient is another."""

    def __init__(self, coords: Coordinates, theta_y: torch.Tensor, grad: torch.Tensor):
        n, p = coords.design.n, coords.design.n_params
        self.n, self.theta_y, self.theta, self.grad = n, theta_y, theta_y[:-1], grad
        self.Ay = torch.empty((n, p + 1), dtype=theta_y.dtype, device=theta_y.device)
        row = 0
        for features, y in coords.design.blocks():
            self.Ay[row:row + len(y)].copy_(torch.from_numpy(coords.rows(features, y)))
            row += len(y)
        self.A = self.Ay[:, :p]
        self.G = torch.empty((p, n), dtype=theta_y.dtype, device=theta_y.device).copy_(self.A.t()).mul_(2 / n)
        self.r = torch.empty(n, dtype=theta_y.dtype, device=theta_y.device)
        # Small designs keep each epoch's residual in a ring of CHUNK rows, squared and summed once a
        # check: there a dot product per epoch costs a third of the epoch.
        self.ring = torch.empty((CHUNK, n), dtype=theta_y.dtype, device=theta_y.device).unbind(0) \
            if n <= RING_ROWS else None
        self.slot = 0

    def full(self) -> torch.Tensor:
        """n times the MSE at theta (a new tensor); its gradient into grad."""
        torch.mv(self.Ay, self.theta_y, out=self.r)
        torch.mv(self.G, self.r, out=self.grad)
        return torch.dot(self.r, self.r)

    def descend(self, lr: float) -> torch.Tensor:
        """A plain gradient step: torch.optim.SGD's p.add_(g, alpha=-lr) with g = G r, fused into one
        gemv (theta += -lr G r, the same arithmetic). Returns n times the loss before it, or on a
        ring the residual r itself."""
        if self.ring is None:
            torch.mv(self.Ay, self.theta_y, out=self.r)
            self.theta.addmv_(self.G, self.r, alpha=-lr)
            return torch.dot(self.r, self.r)
        r, self.slot = self.ring[self.slot], (self.slot + 1) % CHUNK
        torch.mv(self.Ay, self.theta_y, out=r)
        self.theta.addmv_(self.G, r, alpha=-lr)
        return r

    def bound(self) -> torch.Tensor:
        """|A|^T (|A| |theta| + |y|) (p,), the scale of the gradient's rounding (_rounding_distance)."""
        absolute = self.Ay.abs()
        return absolute[:, :-1].t() @ (absolute @ self.theta_y.abs())

    def relative(self, ref: torch.Tensor) -> torch.Tensor:
        """n (f(theta) - f(ref)) = 2 r.s + s.s, s = A (theta - ref), r the residual of the last
        full() (at ref); the gradient at theta into grad."""
        s = self.A @ (self.theta - ref)
        torch.mv(self.G, self.r + s, out=self.grad)
        return 2 * torch.dot(self.r, s) + torch.dot(s, s)

    def batches(self, generator: torch.Generator, batch: int) -> Iterator[torch.Tensor]:
        """[A y] rows of each batch, in torch.randperm order."""
        order = torch.randperm(self.n, generator=generator).to(self.Ay.device)
        return (self.Ay[order[lo:lo + batch]] for lo in range(0, self.n, batch))


class _Streamed:
    """The training rows built again block by block at every pass: O(block) memory."""

    def __init__(self, coords: Coordinates, theta_y: torch.Tensor, grad: torch.Tensor):
        design = coords.design
        self.coords, self.n, self.theta_y, self.theta, self.grad = coords, design.n, theta_y, theta_y[:-1], grad
        self.parts = design.split(max(1, -(-design.n // design.table.block_rows)))

    def _rows(self, design: Design, shuffle: torch.Generator | None = None) -> Iterator[torch.Tensor]:
        for features, y in design.blocks():
            if shuffle is not None:
                perm = torch.randperm(len(y), generator=shuffle).numpy()
                features, y = features[perm], y[perm]
            if len(y):
                yield torch.from_numpy(self.coords.rows(features, y)).to(self.theta_y)

    def full(self) -> torch.Tensor:
        """As _Held.full, the sums merged over the blocks of one pass."""
        self.grad.zero_()
        total = torch.zeros((), dtype=self.grad.dtype, device=self.grad.device)
        for Ay in self._rows(self.coords.design):
            r = Ay @ self.theta_y
            self.grad.addmv_(Ay[:, :-1].t(), r)
            total += torch.dot(r, r)
        self.grad.mul_(2 / self.n)
        return total

    def descend(self, lr: float) -> torch.Tensor:
        total = self.full()
        self.theta.add_(self.grad, alpha=-lr)
        return total

    def bound(self) -> torch.Tensor:
        total = torch.zeros_like(self.grad)
        for Ay in self._rows(self.coords.design):
            total.addmv_(Ay[:, :-1].abs().t(), Ay.abs() @ self.theta_y.abs())
        return total

    def relative(self, ref: torch.Tensor) -> torch.Tensor:
        """As _Held.relative, the residual at ref recomputed block by block."""
        self.grad.zero_()
        total = torch.zeros((), dtype=self.grad.dtype, device=self.grad.device)
        step = self.theta - ref
        for Ay in self._rows(self.coords.design):
            r, s = Ay[:, :-1] @ ref - Ay[:, -1], Ay[:, :-1] @ step
            self.grad.addmv_(Ay[:, :-1].t(), r + s)
            total += 2 * torch.dot(r, s) + torch.dot(s, s)
        self.grad.mul_(2 / self.n)
        return total

    def batches(self, generator: torch.Generator, batch: int) -> Iterator[torch.Tensor]:
        """Batches of `batch` rows from the parts in random order, each block's rows shuffled;
        rows left over at a block's end open the next batch."""
        carry = None
        for j in torch.randperm(len(self.parts), generator=generator).tolist():
            for Ay in self._rows(self.parts[j], generator):
                Ay = Ay if carry is None else torch.cat([carry, Ay])
                cut = len(Ay) - len(Ay) % batch
                yield from (Ay[lo:lo + batch] for lo in range(0, cut, batch))
                carry = Ay[cut:] if cut < len(Ay) else None
        if carry is not None:
            yield carry


@dataclass
class _Watch:
    """What the checks remember between chunks: the first loss, the best-so-far losses of the last
    PATIENCE epochs, and the best distance estimate and the epoch it was reached."""

    tol: float
    rtol: float
    first: float | None = None
    tail: np.ndarray = field(default_factory=lambda: np.empty(0))
    best: float = math.inf
    best_at: int = 0

    def diverged_at(self, chunk: np.ndarray) -> int | None:
        """The first epoch of the chunk whose loss is not finite or exploded, if any."""
        self.first = chunk[0] if self.first is None else self.first
        bad = np.flatnonzero(~np.isfinite(chunk) | (chunk > EXPLODED * max(self.first, 1e-300)))
        return int(bad[0]) if bad.size else None

    def loss_flat(self, chunk: np.ndarray) -> bool:
        """Whether the best loss so far improved by <= tol (relative) over PATIENCE epochs somewhere
        in the chunk: best_{k-PATIENCE} - best_k <= tol * best_k (a few ulps of noise around the
        minimum are no progress)."""
        start = self.tail[-1:] if self.tail.size else chunk[:1]
        seq = np.concatenate([self.tail, np.minimum.accumulate(np.concatenate([start, chunk]))[1:]])
        k = np.arange(len(self.tail), len(seq))
        k = k[k >= PATIENCE]
        self.tail = seq[-PATIENCE:]
        return bool(np.any(seq[k - PATIENCE] - seq[k] <= self.tol * np.abs(seq[k])))

    def converged(self, chunk: np.ndarray, distance: float, done: int, rounding: Callable[[], float]) -> bool:
        """The stop rule after `done` epochs: the distance estimate within MARGIN of rtol, or a floor
        (see NEAR); rounding() is the distance the gradient's rounding accounts for."""
        flat = self.loss_flat(chunk)
        if distance < self.best:
            self.best, self.best_at = distance, done
        stalled = 2 * self.best_at <= done
        floor = stalled and (distance <= NEAR * self.rtol or (flat and distance <= rounding()))
        return distance <= MARGIN * self.rtol or floor


def _run(epoch_fn: Callable[[], torch.Tensor | None], pending: list[torch.Tensor], done: int, until: int,
         epochs: int, deadline: float) -> tuple[int, bool]:
    """Epochs until `until` or the deadline (read after every epoch but the last): the epochs done
    and whether the deadline passed. Each epoch's loss (or residual) waits in pending."""
    while done < until:
        total = epoch_fn()
        if total is None:  # a mini-batch epoch cut short
            return done, True
        pending.append(total)
        done += 1
        if done < epochs and time.monotonic() >= deadline:
            return done, True
    return done, False


def _distance(data: _Held | _Streamed, coords: Coordinates) -> tuple[float, float]:
    """The MSE (training units) at theta and the estimated max relative distance of its original
    parameters to the optimum, |K g| / |beta*| with K g the Newton step H^-1 g mapped back."""
    total = data.full()
    host = torch.cat([total.reshape(1), data.grad]).double().cpu().numpy()  # one host sync
    with np.errstate(divide="ignore", invalid="ignore"):
        distance = float(np.max(np.abs(coords.newton @ host[1:]) / coords.optimum_scale))
    return float(host[0]) / data.n, distance if math.isfinite(distance) else math.inf


def _rounding_distance(data: _Held | _Streamed, coords: Coordinates) -> float:
    """A bound on the distance estimate that rounding alone produces: one rounding (unit u) in each
    product of g = 2/n A^T (A theta - y) and in the rows themselves moves g by up to about
    u 2/n |A|^T (|A| |theta| + |y|), and the estimate by |K| times that."""
    u = torch.finfo(data.grad.dtype).eps / 2
    g = data.bound().double().cpu().numpy() * (u * 2 / data.n)
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.max(np.abs(coords.newton) @ g / coords.optimum_scale))


def train_sgd(design: Design, cfg: TrainConfig, geometry: Geometry | None = None, progress: Progress | None = None,
              rtol: float = 1e-6) -> SGDResult:
    """Train y ~ Linear(terms) by gradient descent; return coefficients on the original scale.

    geometry: the design's TSQR (computed once by validation; None: computed here); rtol: the
    verdict's relative tolerance. Stop rule (tol > 0), at each check: the Newton step H^-1 g of the
    gradient at the current parameters, mapped to the original ones (Coordinates.newton), is their
    distance to the optimum for a quadratic loss; "tol" once it is below MARGIN * rtol relative to
    every parameter, or when neither the best loss (by tol over PATIENCE epochs) nor that estimate
    improves any more.
    """
    start = time.perf_counter()
    # The loop checks the clock itself (a thread running torch cannot be interrupted from outside);
    # time.monotonic costs well under a microsecond, against microseconds for a step.
    deadline = math.inf if cfg.timeout is None else time.monotonic() + cfg.timeout
    device, dtype = resolve_device(cfg.device), getattr(torch, cfg.dtype)
    coords = training_coordinates(design, geometry or design_geometry(design), cfg.standardize, cfg.precondition)
    lr, momentum = auto_lr(coords, cfg.optimizer, cfg.batch_size) if cfg.lr == "auto" else (float(cfg.lr), None)
    if cfg.optimizer == "momentum" and momentum is None:
        momentum = 0.9  # the customary heavy-ball momentum when the step is given by hand
    generator = torch.Generator().manual_seed(cfg.seed)
    n, p = design.n, design.n_params
    theta_y, grad, params = flat_linear(p, design.intercept, generator, dtype, device)
    theta = theta_y[:p]
    held = n * (2 * p + 2) * torch.finfo(dtype).bits // 8 <= MEMORY_BUDGET  # [A y], G and r
    data = (_Held if held else _Streamed)(coords, theta_y, grad)
    opt = None if cfg.optimizer == "sgd" else make_optimizer(cfg.optimizer, params, lr, momentum)
    batch = cfg.batch_size if cfg.batch_size is not None and cfg.batch_size < n else None
    if cfg.optimizer == "lbfgs":
        scale = min(LBFGS_PAIRS / coords.curvature[1], torch.finfo(dtype).max ** 0.5)

    def full_epoch() -> torch.Tensor:
        """One torch.optim step on all rows; n times the loss before it."""
        total = data.full()
        opt.step()
        return total

    def lbfgs_epoch() -> torch.Tensor:
        ref, start = theta.clone(), []

        def closure() -> torch.Tensor:
            """Sets the gradient; returns the loss less its value at the step's start (torch calls
            the closure there first), both times `scale` (see LBFGS_PAIRS)."""
            if start:
                total = data.relative(ref)
            else:
                start.append(data.full())
                total = torch.zeros((), dtype=dtype, device=device)
            grad.mul_(scale)
            return total * (scale / n)

        opt.step(closure)
        return start[0]

    def batch_epoch() -> torch.Tensor | None:
        """One pass in mini-batches: the sum of the batches' squared errors. None when the
        deadline passed mid-epoch (the steps taken stay, the partial loss is dropped)."""
        total = torch.zeros((), dtype=dtype, device=device)
        for i, Ay in enumerate(data.batches(generator, batch)):
            if i and time.monotonic() >= deadline:
                return None

            def loss() -> torch.Tensor:  # the batch's MSE; its gradient into grad
                r = Ay @ theta_y
                torch.addmv(grad, Ay[:, :-1].t(), r, beta=0, alpha=2 / len(r), out=grad)
                return torch.dot(r, r) / len(r)

            if cfg.optimizer == "lbfgs":
                total += opt.step(loss) * len(Ay)
            else:
                total += loss() * len(Ay)
                theta.add_(grad, alpha=-lr) if opt is None else opt.step()
        return total

    if batch is not None:
        epoch_fn = batch_epoch
    elif opt is None:
        epoch_fn = partial(data.descend, lr)
    else:
        epoch_fn = lbfgs_epoch if cfg.optimizer == "lbfgs" else full_epoch
    pending: list[torch.Tensor] = []  # n times each epoch's loss, on the device until a check
    recorded: list[np.ndarray] = []
    watch = _Watch(cfg.tol, rtol)
    stop, distance, done, next_check = "epochs", None, 0, 1
    with torch.no_grad():
        while True:
            final = None
            done, timed_out = _run(epoch_fn, pending, done, next_check, cfg.epochs, deadline)
            if pending:  # at the deadline too, so that the history has one loss per epoch done
                chunk = torch.stack(pending)  # one host sync a check, below
                chunk = (chunk if chunk.ndim == 1 else (chunk * chunk).sum(1)).double().cpu().numpy() / n
                pending.clear()
                recorded.append(chunk)
                next_check = min(done + min(done, CHUNK), cfg.epochs)
                bad = watch.diverged_at(chunk)
                if bad is not None:
                    stop, done = "diverged", done - len(chunk) + bad + 1
                    break
                if cfg.tol > 0:
                    final, distance = _distance(data, coords)
                    if watch.converged(chunk, distance, done, partial(_rounding_distance, data, coords)):
                        stop = "tol"
                if progress is not None:
                    progress(done, cfg.epochs, float(chunk[-1]) * coords.scaling.y_scale**2, distance)
                if stop == "tol":
                    break
            if timed_out:  # after the checks above: a run that diverged or converged by then says so
                stop = "timeout"
                break
            if done == cfg.epochs:
                break
        if final is None:
            final = float(data.full()) / n
    beta = coords.to_original(theta.double().cpu().numpy())
    k = int(design.intercept)
    return SGDResult(
        intercept=float(beta[0]) if k else None,
        coefficients=tuple(float(c) for c in beta[k:]),
        epochs=done,
        final_loss=final * coords.scaling.y_scale**2,
        stop_reason=stop,
        optimizer=cfg.optimizer,
        lr=lr,
        momentum=momentum if cfg.optimizer == "momentum" else None,
        losses=np.concatenate([np.empty(0), *recorded])[:done] * coords.scaling.y_scale**2,
        device=str(device),
        dtype=cfg.dtype,
        seconds=time.perf_counter() - start,
        time_limit=cfg.timeout,
        distance=distance,
        precondition=cfg.precondition,
    )


@task(name="train-sgd")
def train_sgd_task(design: Design, cfg: TrainConfig, geometry: Geometry | None = None,
                   rtol: float = 1e-6) -> SGDResult:
    """Train the torch model by gradient descent."""
    from tasks.progress import TrainingProgress

    progress = TrainingProgress(get_run_logger(), cfg.epochs, f"torch {cfg.optimizer}, up to {cfg.epochs} epochs")
    result = train_sgd(design, cfg, geometry, progress=progress, rtol=rtol)
    progress.finish(result.epochs, result.stop_reason, result.final_loss)
    return result
