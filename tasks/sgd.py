"""SGD step: train torch.nn.Linear with a torch optimizer on the same design, fast and streamed.

The MSE gradient is taken by hand under torch.no_grad, g = 2/n A^T (A theta - y), with the loss of
the parameters before the step as its by-product; plain sgd updates in place as torch.optim.SGD
does (p -= lr g), momentum, adam and lbfgs get p.grad and their own torch.optim step. A design
within MEMORY_BUDGET is held as device tensors built block by block; a larger one streams: a
full-batch epoch is one pass over the blocks, part by part through a Mapper, a mini-batch epoch
visits shuffled blocks with shuffled rows (tasks/kernels/training_rows.py). Checks every few
epochs stop training on convergence or divergence (tasks/stop_rule.py), or at the time limit.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from prefect import get_run_logger, task

from tasks.config import TrainConfig
from tasks.kernels import rational as rq
from tasks.kernels.design import Design
from tasks.kernels.passes import Mapper, local_map
from tasks.kernels.training_rows import HeldRows, StreamedRows
from tasks.kernels.tsqr import Geometry, design_geometry
from tasks.stop_rule import StopRule
from tasks.training_setup import (Scaling, auto_lr, flat_linear, init_linear, make_optimizer, resolve_device,
                                  training_coordinates)

__all__ = ["SGDResult", "init_linear", "resolve_device", "train_sgd", "train_sgd_task"]

# Epochs between host syncs: the loss of every epoch stays on the device until then. The first
# checks come after 1, 2, 4, ... epochs, so a fit that converges at once stops at once.
CHUNK = 256
# L-BFGS near the optimum of an ill-conditioned design: the loss changes below its own float
# resolution, so a line search comparing rounded losses stalls; the closure returns the loss less
# its value at the step's start, 2 r.s + s.s (s = A step), exact where that difference is noise.
# And torch keeps a curvature pair only when y.s > 1e-10, an absolute threshold under which every
# pair falls there, leaving a stale memory: the objective is scaled by LBFGS_PAIRS / lambda_min
# (the Hessian's smallest eigenvalue), so pairs count down to steps of 1e-10 in every direction.
LBFGS_PAIRS = 1e10
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
    distance_floor: how much of that estimate the rounding of the float arithmetic alone can produce
      (StopRule.rounding_distance at the final parameters): below it, no iterate in this dtype is
      measurably closer; None when not measured (tol 0, or diverged).
    The model as trained (None when not recorded), for sgd_model.pt:
    trained: (p,) theta = [bias, weight] in training coordinates, in float64 (exact for float32);
    input_map: (p, q) the float of N[:, k:]: training inputs a = [1, terms] @ input_map (no 1 without
      an intercept); with one, N's first column is e_0, so the bias acts on X's column of ones;
    scaling: the standardization; prediction = y_shift + y_scale * (bias + a @ weight).
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
    distance_floor: float | None = None
    precondition: bool = False
    trained: np.ndarray | None = None
    input_map: np.ndarray | None = None
    scaling: Scaling | None = None

    @property
    def diverged(self) -> bool:
        return self.stop_reason == "diverged"

    @property
    def params(self) -> np.ndarray:
        head = () if self.intercept is None else (self.intercept,)
        return np.array(head + self.coefficients)


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


def train_sgd(design: Design, cfg: TrainConfig, geometry: Geometry | None = None, progress: Progress | None = None,
              rtol: float = 1e-6, mapper: Mapper = local_map, parts: int = 1) -> SGDResult:
    """Train y ~ Linear(terms) by gradient descent; return coefficients on the original scale.

    geometry: the design's TSQR (computed once by validation; None: computed here); rtol: the
    verdict's relative tolerance; mapper, parts: the map over parts of a streamed design's full
    passes. Stop rule (tol > 0), at each check: the Newton step H^-1 g of the gradient at the
    current parameters, mapped to the original ones (stop_rule.newton_map), is their distance to
    the optimum for a quadratic loss; "tol" once it is below MARGIN * rtol relative to every
    parameter, or when neither the best loss (by tol over PATIENCE epochs) nor that estimate
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
    # Only streamed passes go through mapper: a Prefect task per part per epoch costs about a second,
    # against micro- to milliseconds for an epoch on held rows, while a streamed pass reads every
    # row anyway (seconds at scale). Mini-batch steps are sequential: their batches are read here.
    data = HeldRows(design, coords.row_map, theta_y, grad, CHUNK) if held else \
        StreamedRows(design, coords.row_map, theta_y, grad, mapper, parts)
    opt = None if cfg.optimizer == "sgd" else make_optimizer(cfg.optimizer, params, lr, momentum)
    batch = cfg.batch_size if cfg.batch_size is not None and cfg.batch_size < n else None
    if cfg.optimizer == "lbfgs":
        scale = min(LBFGS_PAIRS / coords.curvature[1], torch.finfo(dtype).max ** 0.5)
    # L-BFGS restarts (lbfgs_epoch): the memory before a restart while its first step is pending, and
    # whether restarts are still allowed.
    saved: dict | None = None
    restarts = True

    def full_epoch() -> torch.Tensor:
        """One torch.optim step on all rows; n times the loss before it."""
        total = data.full()
        opt.step()
        return total

    def lbfgs_epoch() -> torch.Tensor:
        nonlocal saved, restarts
        # When its line search finds no step (a step of 0), torch's L-BFGS keeps its memory and
        # gradient and takes the same step of 0 at every later epoch: stuck for good (Filip: 1.07
        # from the optimum on one BLAS kernel path, 6e-9 on others). Then its memory is cleared, as
        # L-BFGS codes do on a failed line search, and it restarts from steepest descent; if that
        # first step overflows (float32 at its floor), it is undone and restarts end.
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
        if saved is not None and not bool(torch.isfinite(theta).all()):
            theta.copy_(ref)  # undo the restart's first step, restore the memory, restart no more
            opt.state.clear()
            opt.state.update(saved)
            saved, restarts = None, False
        elif saved is None and restarts and torch.equal(theta, ref):
            saved = {k: copy.deepcopy(v) for k, v in opt.state.items()}
            opt.state.clear()
        else:
            saved = None  # the restart's first step went through (or there was none)
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
    rule = StopRule(coords, cfg.tol, rtol)
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
                bad = rule.diverged_at(chunk)
                if bad is not None:
                    stop, done = "diverged", done - len(chunk) + bad + 1
                    break
                if cfg.tol > 0:
                    final, distance = rule.distance(data)
                    if rule.converged(chunk, distance, done, data):
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
        floor = rule.rounding_distance(data) if cfg.tol > 0 and stop != "diverged" else None
    trained = theta.double().cpu().numpy().copy()  # not a view of the training buffer
    beta = coords.to_original(trained)
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
        distance_floor=floor,
        precondition=cfg.precondition,
        trained=trained,
        input_map=np.array(rq.to_float(coords.N))[:, k:],
        scaling=coords.scaling,
    )


@task(name="train-sgd")
def train_sgd_task(design: Design, cfg: TrainConfig, geometry: Geometry | None = None,
                   rtol: float = 1e-6, mapper: Mapper = local_map, parts: int = 1) -> SGDResult:
    """Train the torch model by gradient descent."""
    from tasks.progress import TrainingProgress

    progress = TrainingProgress(get_run_logger(), cfg.epochs, f"torch {cfg.optimizer}, up to {cfg.epochs} epochs")
    result = train_sgd(design, cfg, geometry, progress=progress, rtol=rtol, mapper=mapper, parts=parts)
    progress.finish(result.epochs, result.stop_reason, result.final_loss)
    return result
