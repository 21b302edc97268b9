"""The training rows [A y] of a design, and the full-batch loss and gradient over them.

Training minimizes f(theta) = 1/n |A theta - y|^2 on standardized (or preconditioned) rows; with
theta_y = [theta, -1], the residual r = [A y] theta_y = A theta - y is one product and the gradient
g = 2/n A^T r another. Rows within the caller's memory budget are held on the device (HeldRows);
larger designs stream (StreamedRows): each full pass builds the rows again block by block, in
O(block) memory, part by part through Passes (tasks/kernels/passes.py), each part's sums in
float64 and merged in part order, so any map gives the single-part answer to float64 rounding.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch

from tasks.kernels import compiled
from tasks.kernels.design import Design, ScaledBasis
from tasks.kernels.passes import LOCAL, Passes
from tasks.kernels.table import ColumnStats

# Designs up to this many rows keep each epoch's residual in a ring (HeldRows.descend).
RING_ROWS = 4096


@dataclass(frozen=True)
class RowMap:
    """How raw rows become training rows: a = [1, (terms - x_shift) / x_scale] (x_shift, x_scale:
    (n_terms,)), or with a preconditioner P (p, p) a = [1, (W P)[:, k:]] (W: the basis' rows);
    y_std = (y - y_shift) / y_scale. A few p-sized arrays: it travels with every part of a pass."""

    basis: ScaledBasis
    x_shift: np.ndarray
    x_scale: np.ndarray
    y_shift: float
    y_scale: float
    P: np.ndarray | None

    def rows(self, design: Design, features: np.ndarray, y: np.ndarray) -> np.ndarray:
        """(m, p + 1) float64 [A y_std] of a block of design: raw predictor values (m, n_features), y (m,).
        A whitened design with the model's intercept (--weights) has s = sqrt(w) for its constant
        column (its first): the shifts scale with it, a = [s, (s x - s x_shift) / x_scale]."""
        k, p = int(design.reports_intercept), design.n_params
        s = features[:, 0] if k and not design.intercept else None  # the whitened constant column
        # Column-major: each column written in one contiguous sweep (3x faster than row-major from
        # the blocks' column-major values); BLAS reads either layout.
        A = np.empty((p + 1, features.shape[0])).T
        if k:
            A[:, 0] = 1.0 if s is None else s
        if self.P is None:
            terms = design.terms_of(features) if s is None else features[:, 1:]
            np.subtract(terms, self.x_shift if s is None else np.outer(s, self.x_shift), out=A[:, k:p])
            A[:, k:p] /= self.x_scale
        else:
            np.matmul(design.basis_rows(self.basis, features), self.P[:, k:], out=A[:, k:p])
        np.subtract(y, self.y_shift if s is None else self.y_shift * s, out=A[:, p])
        A[:, p] /= self.y_scale
        return A

    def norm_bound(self, design: Design, terms: ColumnStats) -> float:
        """A bound on max_i ||a_i||^2 from the column statistics (no pass; terms: the term columns'):
        |a_ij| <= the largest |x - shift| / scale of column j; with P, a_ij = sum_l w_il P_lj with
        |w_il| bounded by the basis, and ||a_i||^2 = n h_i <= n (h_i the leverage) as well."""
        k = int(design.reports_intercept)
        if k and not design.intercept:  # whitened (--weights): constant column s, |s x - s shift| <= |s x| + s |shift|
            s = float(terms.absmax[0])
            if self.P is None:
                top = (terms.absmax[1:] + s * np.abs(self.x_shift)) / self.x_scale
                return float(s * s + np.sum(top**2))
            w = design.stats.column(slice(1, None)).absmax / self.basis.scale
            return float(s * s + min(design.n, np.sum((w @ np.abs(self.P[:, k:])) ** 2)))
        if self.P is None:
            top = np.maximum(np.abs(terms.min - self.x_shift), np.abs(terms.max - self.x_shift)) / self.x_scale
            return float(k + np.sum(top**2))
        if self.basis.kind == "columns":
            x = design.stats.column(slice(1, None))
            w = np.maximum(np.abs(x.min - self.basis.shift), np.abs(x.max - self.basis.shift)) / self.basis.scale
            w = np.concatenate([[self.basis.ones] if k else [], w])
        else:  # |T_k(z)| <= 1 and |z^k| <= 1 for z in [-1, 1]
            w = np.ones(design.n_params)
        return float(min(design.n, k + np.sum((w @ np.abs(self.P[:, k:])) ** 2)))


def part_loss_gradient(row_map: RowMap, theta_y: np.ndarray, ref: np.ndarray | None,
                       part: Design, K: np.ndarray | None = None) -> tuple[float, np.ndarray] | tuple:
    """A part's float64 sums at theta_y = [theta, -1] (p + 1,): (r.r, A^T r (p,)), r = A theta - y;
    with ref (p,), L-BFGS's loss difference (2 r.s + s.s, A^T (r + s)), r = A ref - y and
    s = A (theta - ref): |r + s|^2 - |r|^2 without the cancellation of two rounded losses. With K
    (the stop rule's Newton map), the part's rounding_sums too, from the same rows (a third item)."""
    p = len(theta_y) - 1
    if ref is None and _compiled_rows(row_map, part):
        return _compiled_loss_gradient(row_map, theta_y, part, K)
    loss, grad = 0.0, np.zeros(p)
    rounding = np.zeros((2, p)) if K is not None else None
    for features, y in part.blocks():
        if not len(y):
            continue
        Ay = row_map.rows(part, features, y)
        if rounding is not None:
            rounding += rounding_sums(Ay, theta_y, K)
        A = Ay[:, :p]
        if ref is None:
            r = Ay @ theta_y
            loss += r @ r
        else:
            r, s = A @ ref - Ay[:, p], A @ (theta_y[:p] - ref)
            loss += 2 * (r @ s) + s @ s
            r += s
        grad += A.T @ r
    return (float(loss), grad) if rounding is None else (float(loss), grad, rounding)


def _compiled_rows(row_map: RowMap, part: Design) -> bool:
    """Whether a full pass over this part runs on the compiled kernel (kernels/compiled.py): straight-line
    terms scaled column by column (no preconditioner, no whitened rows, no formula), parts of
    compiled.MIN_ROWS rows and more, where numba runs."""
    whitened = part.reports_intercept and not part.intercept
    return (row_map.P is None and part.degree == 1 and part.formula is None and not whitened
            and compiled.usable(part.n))


def _compiled_loss_gradient(row_map: RowMap, theta_y: np.ndarray, part: Design,
                            K: np.ndarray | None) -> tuple[float, np.ndarray] | tuple:
    """part_loss_gradient in one compiled sweep per half block (the two halves on both cores), the
    training rows never built: the loss and gradient sums compensated, so no less accurate than
    the float64 BLAS sums of the numpy path."""
    p = len(theta_y) - 1
    # Fresh writable C arrays: numba compiles one machine-code version per array type (layout, read-only).
    vector = partial(np.array, dtype=np.float64, order="C")
    sweep = partial(compiled.training_sums, shift=vector(row_map.x_shift), scale=vector(row_map.x_scale),
                    y_shift=float(row_map.y_shift), y_scale=float(row_map.y_scale), theta=vector(theta_y[:p]),
                    intercept=bool(part.intercept), Kt=vector((K if K is not None else np.zeros((p, p))).T),
                    rounding=K is not None)
    loss, grad, rounding = 0.0, np.zeros(p), np.zeros((2, p))
    for features, y in part.blocks():
        if not len(y):
            continue
        for sums in compiled.in_halves(sweep, features, y):
            loss, grad, rounding = loss + sums[0], grad + sums[1], rounding + sums[2]
    return (loss, grad) if K is None else (loss, grad, rounding)


def rounding_sums(Ay: np.ndarray, theta_y: np.ndarray, K: np.ndarray) -> np.ndarray:
    """(2, p) for rows Ay = [A y] (m, p + 1) in float64: sum_i (K a_i)^2 e_i^2 and sum_i a_i^2 r_i^2,
    with r_i = a_i theta - y_i and e_i = |a_i| |theta| + |y_i|, the scale of r_i's rounding. They
    are the variances, in units of u^2, of what rounding the residuals (and the rows themselves) and
    the products a_ij r_i adds to the Newton step K g (StopRule.rounding_distance)."""
    r, e = Ay @ theta_y, np.abs(Ay) @ np.abs(theta_y)
    A = Ay[:, :-1]
    return np.stack([(np.square(A @ K.T) * np.square(e)[:, None]).sum(0), (np.square(A) * np.square(r)[:, None]).sum(0)])


def part_rounding(row_map: RowMap, theta_y: np.ndarray, K: np.ndarray, part: Design) -> np.ndarray:
    """A part's rounding_sums, block by block (by the kernel that full(K) would use)."""
    if _compiled_rows(row_map, part):
        return _compiled_loss_gradient(row_map, theta_y, part, K)[2]
    total = np.zeros((2, len(theta_y) - 1))
    for features, y in part.blocks():
        if len(y):
            total += rounding_sums(row_map.rows(part, features, y), theta_y, K)
    return total


# Rows per piece of the rounding sums of held rows (a few MB of float64 temporaries at a time).
ROUNDING_ROWS = 65536


class HeldRows:
    """The training rows on the device, filled one block at a time: Ay = [A y] (n, p + 1), so that
    r = Ay theta_y = A theta - y is one product, and G = 2/n A^T (p, n) so the gradient is another.
    theta_y (p + 1,), grad (p,): the model's parameters (last entry -1) and gradient, used in place;
    slots: epochs whose residuals may wait between host syncs."""

    def __init__(self, design: Design, row_map: RowMap, theta_y: torch.Tensor, grad: torch.Tensor, slots: int):
        n, p = design.n, design.n_params
        self.n, self.theta_y, self.theta, self.grad = n, theta_y, theta_y[:-1], grad
        self.Ay = torch.empty((n, p + 1), dtype=theta_y.dtype, device=theta_y.device)
        row = 0
        for features, y in design.blocks():
            self.Ay[row:row + len(y)].copy_(torch.from_numpy(row_map.rows(design, features, y)))
            row += len(y)
        self.A = self.Ay[:, :p]
        self.G = torch.empty((p, n), dtype=theta_y.dtype, device=theta_y.device).copy_(self.A.t()).mul_(2 / n)
        self.r = torch.empty(n, dtype=theta_y.dtype, device=theta_y.device)
        # Small designs keep each epoch's residual in a ring of `slots` rows, squared and summed once a
        # check: there a dot product per epoch costs a third of the epoch.
        self.ring = torch.empty((slots, n), dtype=theta_y.dtype, device=theta_y.device).unbind(0) \
            if n <= RING_ROWS else None
        self.slot = 0

    def full(self, K: np.ndarray | None = None) -> torch.Tensor:
        """n times the MSE at theta (a new tensor); its gradient into grad. (K: a streamed pass's
        request for the rounding sums too; rounding() costs no pass here.)"""
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
        r, self.slot = self.ring[self.slot], (self.slot + 1) % len(self.ring)
        torch.mv(self.Ay, self.theta_y, out=r)
        self.theta.addmv_(self.G, r, alpha=-lr)
        return r

    def rounding(self, K: np.ndarray) -> np.ndarray:
        """rounding_sums of every row (2, p), in float64 and in pieces of ROUNDING_ROWS rows."""
        theta_y = self.theta_y.double().cpu().numpy()
        return sum((rounding_sums(self.Ay[lo:lo + ROUNDING_ROWS].double().cpu().numpy(), theta_y, K)
                    for lo in range(0, self.n, ROUNDING_ROWS)), np.zeros((2, len(K))))

    def relative(self, ref: torch.Tensor) -> torch.Tensor:
        """n (f(theta) - f(ref)) = 2 r.s + s.s, s = A (theta - ref), r the residual of the last
        full() (at ref); the gradient at theta into grad."""
        s = self.A @ (self.theta - ref)
        torch.mv(self.G, self.r + s, out=self.grad)
        return 2 * torch.dot(self.r, s) + torch.dot(s, s)

    def batches(self, generator: torch.Generator, batch: int) -> Iterator[torch.Tensor]:
        """[A y] rows (<= batch, p + 1) of each batch, in torch.randperm order."""
        order = torch.randperm(self.n, generator=generator).to(self.Ay.device)
        return (self.Ay[order[lo:lo + batch]] for lo in range(0, self.n, batch))


class StreamedRows:
    """The training rows built again block by block at every pass: O(block) memory. Full passes map
    over the design's parts through passes; mini-batches read shuffled blocks here (their steps are
    sequential). Arguments as HeldRows'."""

    def __init__(self, design: Design, row_map: RowMap, theta_y: torch.Tensor, grad: torch.Tensor,
                 passes: Passes = LOCAL):
        self.design, self.row_map, self.passes, self.parts = design, row_map, passes, passes.split(design)
        self.n, self.theta_y, self.theta, self.grad = design.n, theta_y, theta_y[:-1], grad
        self.blocks = design.split(max(1, -(-design.n // design.table.block_rows)))
        self._rounding: tuple | None = None  # (K, theta_y, sums) of the last full pass asked for them

    def _host(self, tensor: torch.Tensor) -> np.ndarray:
        # A host copy per pass is nothing beside reading every row.
        return tensor.double().cpu().numpy()

    def _merged(self, ref: torch.Tensor | None, K: np.ndarray | None = None) -> torch.Tensor:
        """The parts' sums added in part order; 2/n times the gradient sum into grad. With K, the
        rounding sums at this theta too, kept for rounding(K)."""
        theta_y = self._host(self.theta_y)
        fn = partial(part_loss_gradient, self.row_map, theta_y, None if ref is None else self._host(ref), K=K)
        loss, grad, rounding = 0.0, np.zeros(len(self.grad)), np.zeros((2, len(self.grad)))
        for sums in self.passes.map(fn, self.parts):
            loss, grad = loss + sums[0], grad + sums[1]
            if K is not None:
                rounding += sums[2]
        self._rounding = (K, theta_y.copy(), rounding) if K is not None else None  # a copy: numpy() is a view
        self.grad.copy_(torch.from_numpy(grad * (2 / self.n)))
        return torch.tensor(loss, dtype=self.grad.dtype, device=self.grad.device)

    def full(self, K: np.ndarray | None = None) -> torch.Tensor:
        """As HeldRows.full; with K (the last check's: training ends after it), the rounding sums in
        the same pass, so that rounding(K) then reads no rows."""
        return self._merged(None, K)

    def relative(self, ref: torch.Tensor) -> torch.Tensor:
        """As HeldRows.relative, the residual at ref recomputed block by block."""
        return self._merged(ref)

    def descend(self, lr: float) -> torch.Tensor:
        total = self.full()
        self.theta.add_(self.grad, alpha=-lr)
        return total

    def rounding(self, K: np.ndarray) -> np.ndarray:
        theta_y = self._host(self.theta_y)
        kept = self._rounding
        if kept is not None and kept[0] is K and np.array_equal(kept[1], theta_y):
            return kept[2]  # the last full pass was at this theta with this K
        parts = self.passes.map(partial(part_rounding, self.row_map, theta_y, K), self.parts)
        return sum(parts, np.zeros((2, len(self.grad))))

    def batches(self, generator: torch.Generator, batch: int) -> Iterator[torch.Tensor]:
        """Batches of `batch` rows from the blocks in random order, each block's rows shuffled;
        rows left over at a block's end open the next batch."""
        pending, held = [], 0  # blocks' rows not yet in a batch: joined once a batch is full
        for j in torch.randperm(len(self.blocks), generator=generator).tolist():
            for features, y in self.blocks[j].blocks():
                perm = torch.randperm(len(y), generator=generator).numpy()
                if not len(y):
                    continue
                rows = np.take(self.row_map.rows(self.design, features, y), perm, axis=0)  # the block shuffled
                pending.append(torch.from_numpy(rows).to(self.theta_y))
                held += len(y)
                if held >= batch:
                    Ay = torch.cat(pending) if len(pending) > 1 else pending[0]
                    cut = held - held % batch
                    yield from (Ay[lo:lo + batch] for lo in range(0, cut, batch))
                    pending, held = ([Ay[cut:]], held - cut) if cut < held else ([], 0)
                    del Ay
        if pending:
            yield torch.cat(pending)


# What training steps on: rows held on the device or streamed.
TrainingRows = HeldRows | StreamedRows
