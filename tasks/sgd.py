"""SGD step: train torch.nn.Linear with MSELoss and a torch optimizer on the same design."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from prefect import get_run_logger, task

from tasks.config import TrainConfig
from tasks.kernels.design import Design
from tasks.training_setup import Scaling, auto_lr, init_linear, make_optimizer, resolve_device

__all__ = ["SGDResult", "init_linear", "resolve_device", "train_sgd", "train_sgd_task"]

# Epochs between host syncs: the loss of every epoch stays on the device until then. The first
# checks come after 8, 16, 32, ... epochs, so a fit that converges at once stops early.
CHUNK = 256
FIRST_CHECK = 8
# The tol rule looks at the best loss over this many epochs (one flat step, e.g. at a turning
# point of heavy-ball momentum, is not convergence).
PATIENCE = 100
# Training has diverged when the loss is not finite or grew by this factor over the first loss.
EXPLODED = 1e12

Progress = Callable[[int, int, float], None]


@dataclass(frozen=True)
class SGDResult:
    """What training reached; coefficients mapped back to the data's original scale.

    losses: (epochs,) full-data MSE in the target's original units, one per epoch run.
    stop_reason: why training ended:
      "tol"       the loss stopped improving (see TrainConfig.tol);
      "epochs"    the epoch budget ran out;
      "diverged"  the loss became non-finite or exploded;
      "timeout"   the time limit (time_limit seconds, TrainConfig.timeout) passed; the parameters
                  are those reached, and a mini-batch epoch cut short is not counted in epochs.
    time_limit: the time limit training ran under, in seconds; None: none.
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

    @property
    def diverged(self) -> bool:
        return self.stop_reason == "diverged"

    @property
    def params(self) -> np.ndarray:
        head = () if self.intercept is None else (self.intercept,)
        return np.array(head + self.coefficients)


def _stop_index(chunk: np.ndarray, tail: np.ndarray, tol: float) -> tuple[int | None, np.ndarray]:
    """Where the best loss so far has improved by <= tol (relative) over the last PATIENCE epochs.

    best_{k-PATIENCE} - best_k <= tol * best_k: the loss has stopped improving (float64 noise of
    a few ulps around the minimum does not count as progress). tail: the best-so-far values of the
    epochs before this chunk (at most PATIENCE); returns the stop index and the new tail.
    """
    start = tail[-1:] if tail.size else chunk[:1]
    best = np.minimum.accumulate(np.concatenate([start, chunk]))[1:]
    seq = np.concatenate([tail, best])
    if tol <= 0:
        return None, seq[-PATIENCE:]
    k = np.arange(len(tail), len(seq))
    k = k[k >= PATIENCE]
    hits = k[seq[k - PATIENCE] - seq[k] <= tol * np.abs(seq[k])]
    return (int(hits[0]) - len(tail) if hits.size else None), seq[-PATIENCE:]


def train_sgd(design: Design, cfg: TrainConfig, progress: Progress | None = None) -> SGDResult:
    """Train y ~ Linear(terms) by gradient descent; return coefficients on the original scale."""
    start = time.perf_counter()
    # The loop checks the clock itself (a thread running torch cannot be interrupted from outside);
    # time.monotonic costs well under a microsecond, against tens of microseconds for a step.
    deadline = math.inf if cfg.timeout is None else time.monotonic() + cfg.timeout
    device = resolve_device(cfg.device)
    dtype = getattr(torch, cfg.dtype)
    X, y, n = design.terms, design.y, design.n
    scaling = Scaling.fit(X, y, design.intercept, cfg.standardize)
    Xs = (X - scaling.x_shift) / scaling.x_scale
    ys = (y - scaling.y_shift) / scaling.y_scale
    A = np.column_stack([np.ones(n), Xs]) if design.intercept else Xs
    lr, momentum = auto_lr(A, cfg.optimizer, cfg.batch_size) if cfg.lr == "auto" else (float(cfg.lr), None)
    if cfg.optimizer == "momentum" and momentum is None:
        momentum = 0.9  # the customary heavy-ball momentum when the step is given by hand

    generator = torch.Generator().manual_seed(cfg.seed)
    model = init_linear(X.shape[1], design.intercept, generator, dtype).to(device)
    Xt = torch.as_tensor(Xs, dtype=dtype, device=device)
    yt = torch.as_tensor(ys, dtype=dtype, device=device).unsqueeze(1)
    loss_fn = torch.nn.MSELoss()
    opt = make_optimizer(cfg.optimizer, model.parameters(), lr, momentum)
    batch = cfg.batch_size if cfg.batch_size is not None and cfg.batch_size < n else None

    def closure() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(Xt), yt)
        loss.backward()
        return loss

    def batch_step(idx: torch.Tensor) -> torch.Tensor:
        """One step on the rows idx; returns the batch's summed squared error (on the device)."""
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(Xt[idx]), yt[idx])
        loss.backward()
        opt.step()
        return loss.detach() * len(idx)

    # Device tensors, stacked and copied to the host once a chunk: no .item() per epoch.
    pending: list[torch.Tensor] = []
    recorded: list[np.ndarray] = []
    stop, done, first, tail = "epochs", 0, None, np.empty(0)
    next_check = min(FIRST_CHECK, cfg.epochs)
    for epoch in range(cfg.epochs):
        if batch is None:
            # The loss is that of the parameters before this epoch's step, as in the tutorial.
            loss: torch.Tensor | None = (
                opt.step(closure) if cfg.optimizer == "lbfgs" else _step(opt, closure)).detach()
        else:
            order = torch.randperm(n, generator=generator).to(device)
            loss = _batch_epoch(batch_step, order, batch, deadline)
        if loss is None:
            timed_out = True
        else:
            pending.append(loss)
            done = epoch + 1
            timed_out = done < cfg.epochs and time.monotonic() >= deadline
        if done < next_check and not timed_out:
            continue
        if pending:  # at the deadline too, so that the history has one loss per epoch done
            chunk = torch.stack(pending).double().cpu().numpy()  # one host sync a chunk
            pending.clear()
            recorded.append(chunk)
            next_check = min(done + min(done, CHUNK), cfg.epochs)
            first = chunk[0] if first is None else first
            bad = np.flatnonzero(~np.isfinite(chunk) | (chunk > EXPLODED * max(first, 1e-300)))
            if bad.size:
                stop, done = "diverged", done - len(chunk) + int(bad[0]) + 1
                break
            hit, tail = _stop_index(chunk, tail, cfg.tol)
            if progress is not None:
                progress(done, cfg.epochs, float(chunk[-1]) * scaling.y_scale**2)
            if hit is not None:
                stop = "tol"
                break
        if timed_out:  # after the checks above: a run that diverged or converged by then says so
            stop = "timeout"
            break

    with torch.no_grad():
        final = float(loss_fn(model(Xt), yt)) * scaling.y_scale**2
        weight = model.weight.detach().double().cpu().numpy()[0]
        bias = float(model.bias.detach().double().cpu()[0]) if design.intercept else None
    intercept, coef = scaling.to_original(weight, bias)
    history = np.concatenate([np.empty(0), *recorded])[:done] * scaling.y_scale**2
    return SGDResult(
        intercept=intercept,
        coefficients=tuple(float(c) for c in coef),
        epochs=done,
        final_loss=final,
        stop_reason=stop,
        optimizer=cfg.optimizer,
        lr=lr,
        momentum=momentum if cfg.optimizer == "momentum" else None,
        losses=history,
        device=str(device),
        dtype=cfg.dtype,
        seconds=time.perf_counter() - start,
        time_limit=cfg.timeout,
    )


def _step(opt: torch.optim.Optimizer, closure: Callable[[], torch.Tensor]) -> torch.Tensor:
    loss = closure()
    opt.step()
    return loss


def _batch_epoch(step: Callable[[torch.Tensor], torch.Tensor], order: torch.Tensor, batch: int,
                 deadline: float) -> torch.Tensor | None:
    """One pass over the rows in `order`, `batch` at a time: the mean of the batch losses over all rows.

    An epoch of a large design can be long, so the deadline is checked between its steps; None
    when it passed mid-epoch (the steps taken stay in the model, the partial loss is dropped).
    """
    total = step(order[:batch])
    for lo in range(batch, len(order), batch):
        if time.monotonic() >= deadline:
            return None
        total = total + step(order[lo:lo + batch])
    return total / len(order)


@task(name="train-sgd")
def train_sgd_task(design: Design, cfg: TrainConfig) -> SGDResult:
    """Train the torch model by gradient descent."""
    from tasks.progress import TrainingProgress

    progress = TrainingProgress(get_run_logger(), cfg.epochs, f"torch {cfg.optimizer}, up to {cfg.epochs} epochs")
    result = train_sgd(design, cfg, progress=progress)
    progress.finish(result.epochs, result.stop_reason, result.final_loss)
    return result
