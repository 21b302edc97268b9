"""SGD step: train torch.nn.Linear with a torch optimizer on the same design, fast and streamed.

The MSE gradient is taken by hand under torch.no_grad, g = 2/n A^T (A theta - y), with the loss of
the parameters before the step as its by-product; plain sgd updates in place as torch.optim.SGD
does (p -= lr g), momentum, adam and lbfgs get p.grad and their own torch.optim step. A design
within MEMORY_BUDGET is held as device tensors built block by block; a larger one streams: a
full-batch epoch is one pass over the blocks, part by part through a Mapper, a mini-batch epoch
visits shuffled blocks with shuffled rows (tasks/kernels/training_rows.py). Checks every few
epochs stop training on convergence or divergence (tasks/training/stop_rule.py), or at the time limit.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from prefect import get_run_logger, task

from tasks.caching import cache_key
from tasks.config import TrainConfig
from tasks.kernels import rational as rq
from tasks.kernels.design import Design
from tasks.kernels.passes import LOCAL, Passes
from tasks.kernels.training_rows import HeldRows, StreamedRows
from tasks.kernels.tsqr import Geometry, design_geometry
from tasks.training.epochs import LBFGS_PAIRS, Epoch, LBFGSScale, Model, strategy
from tasks.training.result import SGDResult
from tasks.training.setup import (Coordinates, auto_lr, flat_linear, init_linear, make_optimizer, resolve_device,
                                  training_coordinates)
from tasks.training.stop_rule import StopRule

__all__ = ["SGDResult", "init_linear", "resolve_device", "train_sgd", "train_sgd_task"]

# Epochs between host syncs: the loss of every epoch stays on the device until then. The first
# checks come after 1, 2, 4, ... epochs, so a fit that converges at once stops at once.
CHUNK = 256
# Training tensors up to this size are held on the device; larger designs stream.
MEMORY_BUDGET = 256 * 2**20

Progress = Callable[..., None]


def _run(epoch_fn: Epoch, pending: list[torch.Tensor], done: int, until: int, epochs: int,
         deadline: float, clock: Callable[[], float]) -> tuple[int, bool]:
    """Epochs until `until` or the deadline (read after every epoch but the last): the epochs done
    and whether the deadline passed. Each epoch's loss (or residual) waits in pending."""
    while done < until:
        total = epoch_fn()
        if total is None:  # a mini-batch epoch cut short
            return done, True
        pending.append(total)
        done += 1
        if done < epochs and clock() >= deadline:
            return done, True
    return done, False


@dataclass(frozen=True)
class _Setup:
    """Everything the epochs and the checks share: the coordinates, the step, the model's tensors."""

    coords: Coordinates
    lr: float
    momentum: float | None
    generator: torch.Generator
    model: Model
    device: torch.device


def _setup(design: Design, cfg: TrainConfig, geometry: Geometry | None, passes: Passes) -> _Setup:
    device, dtype = resolve_device(cfg.device), getattr(torch, cfg.dtype)
    coords = training_coordinates(design, geometry or design_geometry(design), cfg.standardize, cfg.precondition)
    lr, momentum = auto_lr(coords, cfg.optimizer, cfg.batch_size) if cfg.lr == "auto" else (float(cfg.lr), None)
    if cfg.optimizer == "momentum" and momentum is None:
        momentum = 0.9  # the customary heavy-ball momentum when the step is given by hand
    generator = torch.Generator().manual_seed(cfg.seed)
    n, p = design.n, design.n_params
    theta_y, grad, params = flat_linear(p, bool(coords.k), generator, dtype, device)
    held = n * (2 * p + 2) * torch.finfo(dtype).bits // 8 <= MEMORY_BUDGET  # [A y], G and r
    # Only streamed passes go through `passes`: a Prefect task per part per epoch costs about a second,
    # against micro- to milliseconds for an epoch on held rows, while a streamed pass reads every
    # row anyway (seconds at scale). Mini-batch steps are sequential: their batches are read here.
    data = HeldRows(design, coords.row_map, theta_y, grad, CHUNK) if held else \
        StreamedRows(design, coords.row_map, theta_y, grad, passes)
    opt = None if cfg.optimizer == "sgd" else make_optimizer(cfg.optimizer, params, lr, momentum)
    return _Setup(coords, lr, momentum, generator, Model(data, theta_y, grad, opt, lr, n), device)


def _lbfgs_scale(coords: Coordinates, dtype: str) -> LBFGSScale:
    L, mu = coords.curvature
    ceiling = torch.finfo(getattr(torch, dtype)).max ** 0.5
    return LBFGSScale(min(LBFGS_PAIRS / mu, ceiling), L, ceiling)


@dataclass
class _Loop:
    """The state of the check loop: the losses recorded, why it stopped, the last distance estimate."""

    recorded: list[np.ndarray] = field(default_factory=list)
    stop: str = "epochs"
    distance: float | None = None
    final: float | None = None  # the loss (training units) measured by the last check, if any


def _check(loop: _Loop, chunk: np.ndarray, done: int, rule: StopRule, cfg: TrainConfig, setup: _Setup,
           progress: Progress | None) -> int:
    """One check on the epochs' losses since the last: divergence, then the stop rule; returns the
    epochs done (fewer when it diverged within the chunk)."""
    loop.recorded.append(chunk)
    bad = rule.diverged_at(chunk)
    if bad is not None:
        loop.stop = "diverged"
        return done - len(chunk) + bad + 1
    if cfg.tol > 0:
        loop.final, loop.distance = rule.distance(setup.model.data, last=done == cfg.epochs)
        if rule.converged(chunk, loop.distance, done, setup.model.data):
            loop.stop = "tol"
    if progress is not None:
        progress(done, cfg.epochs, float(chunk[-1]) * setup.coords.scaling.y_scale**2, loop.distance)
    return done


def train_sgd(design: Design, cfg: TrainConfig, geometry: Geometry | None = None, progress: Progress | None = None,
              rtol: float = 1e-6, passes: Passes = LOCAL) -> SGDResult:
    """Train y ~ Linear(terms) by gradient descent; return coefficients on the original scale.

    geometry: the design's TSQR (computed once by validation; None: computed here); rtol: the
    verdict's relative tolerance; passes: how a streamed design's full passes go over its
    parts. Stop rule (tol > 0), at each check: the Newton step H^-1 g of the gradient at the
    current parameters, mapped to the original ones (stop_rule.newton_map), is their distance to
    the optimum for a quadratic loss; "tol" once it is below MARGIN * rtol relative to every
    parameter, or when neither the best loss (by tol over PATIENCE epochs) nor that estimate
    improves any more.
    """
    began = time.perf_counter()
    # The loop checks the clock itself (a thread running torch cannot be interrupted from outside);
    # time.monotonic costs well under a microsecond, against microseconds for a step.
    clock = time.monotonic
    deadline = math.inf if cfg.timeout is None else clock() + cfg.timeout
    setup = _setup(design, cfg, geometry, passes)
    n, data = design.n, setup.model.data
    batch = cfg.batch_size if cfg.batch_size is not None and cfg.batch_size < n else None
    scale = _lbfgs_scale(setup.coords, cfg.dtype) if cfg.optimizer == "lbfgs" else None
    epoch_fn = strategy(setup.model, cfg.optimizer, batch, setup.generator, scale, deadline, clock)
    pending: list[torch.Tensor] = []  # n times each epoch's loss, on the device until a check
    rule = StopRule(setup.coords, cfg.tol, rtol)
    loop, done, next_check = _Loop(), 0, 1
    with torch.no_grad():
        while True:
            loop.final = None
            done, timed_out = _run(epoch_fn, pending, done, next_check, cfg.epochs, deadline, clock)
            if pending:  # at the deadline too, so that the history has one loss per epoch done
                chunk = torch.stack(pending)  # one host sync a check
                chunk = (chunk if chunk.ndim == 1 else (chunk * chunk).sum(1)).double().cpu().numpy() / n
                pending.clear()
                next_check = min(done + min(done, CHUNK), cfg.epochs)
                done = _check(loop, chunk, done, rule, cfg, setup, progress)
                if loop.stop in ("diverged", "tol"):
                    break
            if timed_out:  # after the checks above: a run that diverged or converged by then says so
                loop.stop = "timeout"
                break
            if done == cfg.epochs:
                break
        if loop.final is None:
            loop.final = float(data.full()) / n
        floor = rule.rounding_distance(data) if cfg.tol > 0 and loop.stop != "diverged" else None
    return _result(design, cfg, setup, loop, done, floor, time.perf_counter() - began)


def _result(design: Design, cfg: TrainConfig, setup: _Setup, loop: _Loop, done: int, floor: float | None,
            seconds: float) -> SGDResult:
    """The SGDResult of a finished loop: parameters mapped back to the original scale."""
    coords, y2 = setup.coords, setup.coords.scaling.y_scale**2
    trained = setup.model.theta.double().cpu().numpy().copy()  # not a view of the training buffer
    beta = coords.to_original(trained)
    k = coords.k  # the constant column: the intercept's, or (--weights) sqrt(w)'s
    return SGDResult(
        intercept=float(beta[0]) if k else None,
        coefficients=tuple(float(c) for c in beta[k:]),
        epochs=done,
        final_loss=loop.final * y2,
        stop_reason=loop.stop,
        optimizer=cfg.optimizer,
        lr=setup.lr,
        momentum=setup.momentum if cfg.optimizer == "momentum" else None,
        losses=np.concatenate([np.empty(0), *loop.recorded])[:done] * y2,
        device=str(setup.device),
        dtype=cfg.dtype,
        seconds=seconds,
        time_limit=cfg.timeout,
        distance=loop.distance,
        distance_floor=floor,
        precondition=cfg.precondition,
        trained=trained,
        input_map=np.array(rq.to_float(coords.N))[:, k:],
        scaling=coords.scaling,
    )


@task(name="train-sgd", cache_key_fn=cache_key, persist_result=True)
def train_sgd_task(design: Design, cfg: TrainConfig, geometry: Geometry | None = None,
                   rtol: float = 1e-6, passes: Passes = LOCAL, key: str | None = None) -> SGDResult:
    """Train the torch model by gradient descent. key: the cache key of the run's fits
    (tasks/publish/reuse.py; None: never cached)."""
    from tasks.training.progress import TrainingProgress

    progress = TrainingProgress(get_run_logger(), cfg.epochs, f"torch {cfg.optimizer}, up to {cfg.epochs} epochs")
    result = train_sgd(design, cfg, geometry, progress=progress, rtol=rtol, passes=passes)
    progress.finish(result.epochs, result.stop_reason, result.final_loss)
    return result
