"""Plots step: the fit and the loss curve as matplotlib Figures (returned, never saved here)."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from prefect import task

from tasks.kernels.design import Design
from tasks.exact import ExactFit
from tasks.sgd import SGDResult

EXACT_STYLE = {"color": "tab:blue", "lw": 2.0}
SGD_STYLE = {"color": "tab:orange", "lw": 1.6, "ls": "--"}


def _curve(design: Design, params: np.ndarray, grid: np.ndarray) -> np.ndarray:
    powers = np.column_stack([grid**k for k in range(1, design.degree + 1)])
    X = np.column_stack([np.ones_like(grid), powers]) if design.intercept else powers
    return X @ params


def plot_fit(design: Design, exact: ExactFit, sgd: SGDResult) -> Figure:
    """One feature: the data with the exact and SGD curves. Several: predicted against actual."""
    fig = Figure(figsize=(7, 4.8), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    y = design.y
    if len(design.names) == 1:
        x = design.features[:, 0]
        grid = np.linspace(x.min(), x.max(), 400)
        ax.scatter(x, y, s=22, color="black", zorder=3, label=f"data (n={design.n})")
        ax.plot(grid, _curve(design, exact.params, grid), label="exact least squares", **EXACT_STYLE)
        ax.plot(grid, _curve(design, sgd.params, grid), label=f"torch {sgd.optimizer}", **SGD_STYLE)
        ax.set_xlabel(design.names[0], parse_math=False)  # names are user data, not mathtext
        ax.set_ylabel(design.target, parse_math=False)
    else:
        X = design.matrix()
        ax.scatter(y, X @ exact.params, s=18, label="exact least squares", color=EXACT_STYLE["color"])
        ax.scatter(y, X @ sgd.params, s=18, marker="x", label=f"torch {sgd.optimizer}",
                   color=SGD_STYLE["color"])
        lo, hi = float(y.min()), float(y.max())
        ax.plot([lo, hi], [lo, hi], color="gray", lw=1, label="predicted = actual")
        ax.set_xlabel(f"actual {design.target}", parse_math=False)
        ax.set_ylabel(f"predicted {design.target}", parse_math=False)
    terms = " + ".join(("b0",) * design.intercept + tuple(f"b{j + 1}·{t}" for j, t in enumerate(design.term_names)))
    ax.set_title(f"{design.target} = {terms}", fontsize=10, parse_math=False)
    ax.legend(loc="best", fontsize=9)
    ax.grid(alpha=0.3)
    return fig


def plot_loss(sgd: SGDResult, exact_mse: float) -> Figure:
    """Training loss per epoch on log-log axes, with the exact minimum as a floor."""
    fig = Figure(figsize=(7, 4.8), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    epochs = np.arange(1, len(sgd.losses) + 1)
    finite = np.isfinite(sgd.losses) & (sgd.losses > 0)
    ax.plot(epochs[finite], sgd.losses[finite], color=SGD_STYLE["color"], lw=1.6, label="training loss (MSE)")
    excess = sgd.losses - exact_mse
    keep = np.isfinite(excess) & (excess > 0)
    if keep.any():
        ax.plot(epochs[keep], excess[keep], color="tab:green", lw=1.2, alpha=0.8,
                label="excess over exact minimum")
    if exact_mse > 0:
        ax.axhline(exact_mse, color=EXACT_STYLE["color"], ls=":", lw=1.5, label=f"exact minimum {exact_mse:.6g}")
    if finite.any():  # a run stopped (time limit) before its first epoch has nothing to draw
        ax.set_xscale("log")
        ax.set_yscale("log")
    else:
        ax.text(0.5, 0.5, "no epoch completed", transform=ax.transAxes, ha="center")
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean squared error")
    ax.set_title(f"torch {sgd.optimizer}, lr {sgd.lr:.3g}, {sgd.epochs} epochs ({sgd.stop_reason})", fontsize=10)
    ax.legend(loc="best", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    return fig


@task(name="make-plots")
def make_plots(design: Design, exact: ExactFit, sgd: SGDResult) -> dict[str, Figure]:
    """Draw fit.png and loss.png."""
    return {"fit.png": plot_fit(design, exact, sgd), "loss.png": plot_loss(sgd, exact.mse)}
