"""Plots step: a fixed-size view of the data from one streamed pass, then pure plot functions.

The view is a map + merge over the design's parts: every row is counted in a BINS x BINS
histogram whose edges come from the column statistics (known before the pass), and designs of up
to POINTS_MAX rows also keep their points, drawn one by one as the tutorial does. Curves are
evaluated from the parameters on a grid and the loss curve draws at most LOSS_POINTS epochs, so
drawing costs the same for 10 rows or 1e8, and for 1e2 epochs or 1e8. Each figure is rendered
once, to PNG bytes that both the version folder and the UI get.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, replace
from functools import partial, reduce
from typing import TYPE_CHECKING

import numpy as np
from prefect import task

from tasks.exact.fit import ExactFit
from tasks.kernels.design import Design
from tasks.kernels.passes import LOCAL, Passes
from tasks.publish.schema import FIT_PLOT, LOSS_PLOT
from tasks.training.train import SGDResult
from tasks.wording import counted

if TYPE_CHECKING:  # matplotlib is imported when a plot is drawn: after the fits, not at their memory peak
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

POINTS_MAX = 5000  # rows drawn one by one (a teacher's scatter); above: the density of every row
BINS = 200  # per axis; 200 x 200 cells are finer than the ~600 x 400 pixels of the axes need
GRID = 400  # points of each curve
LOSS_POINTS = 1000  # log-spaced epochs of the loss curve
SIZE, DPI = (7.0, 4.8), 100  # 700 x 480 pixels: 30-80 KB per PNG
EXACT_STYLE = {"color": "tab:blue", "lw": 2.0}
SGD_STYLE = {"color": "tab:orange", "lw": 1.6, "ls": "--"}


@dataclass(frozen=True)
class ViewSpec:
    """What the pass computes, fixed from the whole design's statistics before it starts.

    Plotted coordinates of a row: (x, y) with one feature; with several, (actual y, exact
    prediction), plus the SGD prediction. u_edges, v_edges: (BINS + 1,) edges of the two axes.
    """

    predicted: bool
    u_edges: np.ndarray
    v_edges: np.ndarray
    exact: np.ndarray
    sgd: np.ndarray
    keep_points: bool


@dataclass(frozen=True)
class FitView:
    """A fixed-size view of every row (or a partial one, of one part).

    counts: (BINS, BINS), rows per cell [u bin, v bin]; v values beyond v_edges (predictions far
    outside the data's range) count in the edge bin and in `outside`. sums: (2, BINS), sums of the
    exact and SGD predictions per u bin (several features; zeros otherwise). points: (m, 2 or 3)
    every row's coordinates in row order when spec.keep_points, else None.
    """

    spec: ViewSpec
    counts: np.ndarray
    sums: np.ndarray
    outside: int
    points: np.ndarray | None

    @property
    def n(self) -> int:
        return int(self.counts.sum())

    def merge(self, other: FitView) -> FitView:
        points = None if self.points is None else np.concatenate([self.points, other.points])
        return replace(self, counts=self.counts + other.counts, sums=self.sums + other.sums,
                       outside=self.outside + other.outside, points=points)


def _edges(lo: float, hi: float) -> np.ndarray:
    return np.linspace(lo, hi, BINS + 1) if hi > lo else np.linspace(lo - 0.5, lo + 0.5, BINS + 1)


def view_spec(design: Design, exact: np.ndarray, sgd: np.ndarray) -> ViewSpec:
    """Bin edges from the column statistics: x and y ranges exactly; predictions within
    b0 + sum_j [min, max](b_j * x_j) (interval bound), cut to y's range widened by its span."""
    stats, keep = design.stats, design.n <= POINTS_MAX
    y_lo, y_hi = float(stats.min[0]), float(stats.max[0])
    if len(design.names) == 1 and not (design.formula and design.formula.levels):
        return ViewSpec(False, _edges(float(stats.min[1]), float(stats.max[1])), _edges(y_lo, y_hi), exact, sgd, keep)
    k = int(design.intercept)
    b0, b = (exact[0] if k else 0.0), exact[k:]
    terms = design.terms_stats()
    ends = np.stack([b * terms.min, b * terms.max])
    span = y_hi - y_lo
    lo = max(b0 + ends.min(axis=0).sum(), y_lo - span)
    hi = min(b0 + ends.max(axis=0).sum(), y_hi + span)
    return ViewSpec(True, _edges(y_lo, y_hi), _edges(lo, hi) if hi > lo else _edges(y_lo, y_hi), exact, sgd, keep)


def _bin(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin index of each value on uniform edges, values beyond them in the edge bins."""
    i = np.floor((values - edges[0]) * (BINS / (edges[-1] - edges[0])))
    return np.clip(i, 0, BINS - 1).astype(np.intp)


def view_part(spec: ViewSpec, part: Design) -> FitView:
    """The view of one part: a fold over its blocks (the function a pass maps over the parts)."""
    fold = ViewFold(spec, part)
    for features, y in part.blocks():
        fold.add(features, y)
    return fold.view()


class ViewFold:
    """view_part block by block, for a pass that reads each block for more than the view (compare's):
    add() the part's blocks in row order, then view()."""

    def __init__(self, spec: ViewSpec, part: Design):
        self.spec, self.part = spec, part
        k = int(part.intercept)
        self.coefs = np.column_stack([spec.exact[k:], spec.sgd[k:]])  # (n_terms, 2)
        self.heads = np.array([spec.exact[0], spec.sgd[0]]) if k else np.zeros(2)
        self.counts, self.sums = np.zeros(BINS * BINS, dtype=np.int64), np.zeros((2, BINS))
        self.outside, self.points = 0, []

    def add(self, features: np.ndarray, y: np.ndarray, terms: np.ndarray | None = None) -> None:
        """One block: its raw features (and its term values, when the caller has computed them)."""
        spec = self.spec
        if spec.predicted:  # both models' predictions b0 + terms b in one product
            terms = self.part.terms_of(features) if terms is None else terms
            c = np.column_stack([y, terms @ self.coefs + self.heads])
        else:
            c = np.column_stack([features[:, 0], y])
        i, j = _bin(c[:, 0], spec.u_edges), _bin(c[:, 1], spec.v_edges)
        self.counts += np.bincount(i * BINS + j, minlength=BINS * BINS)
        if spec.predicted:
            self.sums += [np.bincount(i, weights=c[:, 1], minlength=BINS),
                          np.bincount(i, weights=c[:, 2], minlength=BINS)]
            self.outside += int(np.count_nonzero((c[:, 1] < spec.v_edges[0]) | (c[:, 1] > spec.v_edges[-1])))
        if spec.keep_points:
            self.points.append(c)

    def view(self) -> FitView:
        spec = self.spec
        kept = np.concatenate(self.points) if self.points else np.empty((0, 3 if spec.predicted else 2))
        return FitView(spec, self.counts.reshape(BINS, BINS), self.sums, self.outside,
                       kept if spec.keep_points else None)


def fit_view(design: Design, exact: np.ndarray, sgd: np.ndarray, passes: Passes = LOCAL) -> FitView:
    """One streamed pass over the design, part by part, merged in row order."""
    return reduce(FitView.merge, passes.over(partial(view_part, view_spec(design, exact, sgd)), design))


def _figure() -> tuple[Figure, Axes]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=SIZE, dpi=DPI, layout="constrained")
    return fig, fig.add_subplot()


def _density(fig: Figure, ax: Axes, view: FitView) -> None:
    """The histogram as an image, log colour scale, empty cells blank."""
    from matplotlib.colors import LogNorm

    s = view.spec
    counts = np.ma.masked_equal(view.counts.T, 0)
    image = ax.imshow(counts, origin="lower", aspect="auto", interpolation="nearest", cmap="Greys",
                      norm=LogNorm(vmin=1, vmax=max(2, int(view.counts.max()))),
                      extent=(s.u_edges[0], s.u_edges[-1], s.v_edges[0], s.v_edges[-1]))
    beyond = f", {view.outside} beyond the axis in its edge cells" if view.outside else ""
    fig.colorbar(image, ax=ax, label=f"rows per cell ({view.n} rows{beyond})", pad=0.01)
    ax.set_xlim(s.u_edges[0], s.u_edges[-1])
    ax.set_ylim(s.v_edges[0], s.v_edges[-1])


def _finite(values: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(values), values, np.nan)  # a diverged model's curve is left out


def plot_fit(design: Design, view: FitView, exact: ExactFit, sgd: SGDResult) -> Figure:
    """One feature: the data with the exact and SGD curves. Several: predicted against actual.

    design gives names and terms only (no rows are read); view: fit_view of the same fits.
    """
    fig, ax = _figure()
    s, points = view.spec, view.points
    if points is None:
        _density(fig, ax, view)
    if not s.predicted:
        grid = np.linspace(s.u_edges[0], s.u_edges[-1], GRID)
        X = design.matrix_of(grid[:, None])
        if points is not None:
            ax.scatter(points[:, 0], points[:, 1], s=22, color="black", zorder=3, label=f"data (n={view.n})")
        ax.plot(grid, X @ exact.params, label="exact least squares", **EXACT_STYLE)
        ax.plot(grid, _finite(X @ sgd.params), label=f"torch {sgd.optimizer}", **SGD_STYLE)
        ax.set_xlabel(design.names[0], parse_math=False)  # names are user data, not mathtext
        ax.set_ylabel(design.target, parse_math=False)
    else:
        if points is not None:
            ax.scatter(points[:, 0], points[:, 1], s=18, label="exact least squares", color=EXACT_STYLE["color"])
            ax.scatter(points[:, 0], _finite(points[:, 2]), s=18, marker="x", label=f"torch {sgd.optimizer}",
                       color=SGD_STYLE["color"])
        else:
            rows = view.counts.sum(axis=1)
            centres = (s.u_edges[:-1] + s.u_edges[1:]) / 2
            with np.errstate(invalid="ignore", divide="ignore"):
                means = np.where(rows > 0, view.sums / rows, np.nan)
            ax.plot(centres, means[0], label="exact least squares, mean per bin", **EXACT_STYLE)
            ax.plot(centres, _finite(means[1]), label=f"torch {sgd.optimizer}, mean per bin", **SGD_STYLE)
        lo, hi = s.u_edges[0], s.u_edges[-1]
        ax.plot([lo, hi], [lo, hi], color="gray", lw=1, label="predicted = actual")
        ax.set_xlabel(f"actual {design.target}", parse_math=False)
        ax.set_ylabel(f"predicted {design.target}", parse_math=False)
    terms = " + ".join(("b0",) * design.intercept + tuple(f"b{j + 1}·{t}" for j, t in enumerate(design.term_names)))
    ax.set_title(f"{design.target} = {terms}", fontsize=10, parse_math=False)
    # "best" scans every drawn point for each candidate place: only for the bounded scatter.
    ax.legend(loc="best" if points is not None else "upper left", fontsize=9)
    ax.grid(alpha=0.3)
    return fig


def loss_epochs(epochs: int) -> np.ndarray:
    """Every epoch (from 1) up to LOSS_POINTS of them; beyond, at most LOSS_POINTS log-spaced ones,
    the first and the last included."""
    if epochs <= LOSS_POINTS:
        return np.arange(1, epochs + 1)
    return np.unique(np.round(np.geomspace(1, epochs, LOSS_POINTS)).astype(np.int64))


def plot_loss(sgd: SGDResult, exact_mse: float) -> Figure:
    """Training loss per epoch on log-log axes, with the exact minimum as a floor."""
    fig, ax = _figure()
    epochs = loss_epochs(len(sgd.losses))
    losses = np.asarray(sgd.losses[epochs - 1], dtype=np.float64)
    finite = np.isfinite(losses) & (losses > 0)
    # Markers where a line has too few points to be seen (a run of one or a few epochs).
    few = {"marker": "o", "ms": 5} if finite.sum() < 20 else {}
    ax.plot(epochs[finite], losses[finite], color=SGD_STYLE["color"], lw=1.6, label="training loss (MSE)", **few)
    excess = losses - exact_mse
    keep = np.isfinite(excess) & (excess > 0)
    if keep.any():
        ax.plot(epochs[keep], excess[keep], color="tab:green", lw=1.2, alpha=0.8, label="excess over exact minimum",
                **few)
    if exact_mse > 0:
        ax.axhline(exact_mse, color=EXACT_STYLE["color"], ls=":", lw=1.5, label=f"exact minimum {exact_mse:.6g}")
    if finite.any():  # a run stopped (time limit) before its first epoch has nothing to draw
        ax.set_xscale("log")
        ax.set_yscale("log")
    else:
        ax.text(0.5, 0.5, "no epoch completed", transform=ax.transAxes, ha="center")
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean squared error")
    ax.set_title(f"torch {sgd.optimizer}, lr {sgd.lr:.3g}, {counted(sgd.epochs, 'epoch')} ({sgd.stop_reason})", fontsize=10)
    ax.legend(loc="best", fontsize=9)  # at most 2 LOSS_POINTS points to scan
    ax.grid(alpha=0.3, which="both")
    return fig


def png_bytes(fig: Figure) -> bytes:
    """The figure rendered once, as PNG."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


@task(name="make-plots")
def make_plots_task(design: Design, exact: ExactFit, sgd: SGDResult, passes: Passes = LOCAL,
                    view: FitView | None = None) -> dict[str, bytes]:
    """Draw fit.png and loss.png, each rendered once to PNG bytes. view: the fit's view when the
    comparison's pass made it (compare.compare_and_view), else this task makes a pass of its own."""
    if view is None:
        view = fit_view(design, exact.params, sgd.params, passes)
    return {FIT_PLOT: png_bytes(plot_fit(design, view, exact, sgd)), LOSS_PLOT: png_bytes(plot_loss(sgd, exact.mse))}
