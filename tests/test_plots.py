"""The plots: one streamed pass gives a fixed-size view of every row; figures are valid PNGs whose
curves are the parameters' predictions, at a cost that does not grow with rows or epochs."""

from __future__ import annotations

import dataclasses
import io
import pickle

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from matplotlib.image import AxesImage, imread

from tasks.config import TrainConfig
from tasks.evaluate.plots import (BINS, LOSS_POINTS, POINTS_MAX, FitView, ViewSpec, fit_view, make_plots_task, plot_fit,
                                  plot_loss, png_bytes, view_part, view_spec)
from tasks.exact.fit import fit_exact
from tasks.kernels.passes import Passes
from tasks.kernels.table import ParquetTable, stats_of
from tasks.training.train import train_sgd
from tests.helpers import TUTORIAL_X, TUTORIAL_Y, make_design, tutorial_design

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_PNG_BYTES = 150_000  # each image is also inlined, base64, in the UI's summary


def _data(n: int, p: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p)) * np.arange(1, p + 1) + np.arange(p)
    return X, 3 + X @ np.linspace(-2, 2, p) + rng.normal(size=n)


def _fits(design, sgd_shift: float = 1e-2):
    """The exact fit, and an SGD result whose parameters are the exact ones moved by sgd_shift."""
    exact = fit_exact(design)
    sgd = train_sgd(design, TrainConfig(epochs=3, device="cpu"))
    params = exact.params * (1 + sgd_shift)
    k = int(design.intercept)
    sgd = dataclasses.replace(sgd, intercept=float(params[0]) if k else None,
                              coefficients=tuple(float(v) for v in params[k:]))
    return exact, sgd


def _pickling_map(fn, parts):
    """A mapper that ships the function and each part through pickle, as a Dask worker gets them."""
    fn = pickle.loads(pickle.dumps(fn))
    return [fn(pickle.loads(pickle.dumps(part))) for part in parts]


def _png(png: bytes) -> np.ndarray:
    assert png.startswith(PNG_SIGNATURE)
    assert len(png) < MAX_PNG_BYTES
    image = imread(io.BytesIO(png), format="png")
    assert image.shape[:2] == (480, 700) and float(image.std()) > 0, "a 700 x 480 picture, not blank"
    return image


@pytest.mark.parametrize("p", [1, 3])
def test_the_view_counts_every_row_once_whatever_the_blocks_and_parts(p):
    """Counts equal numpy's histogram2d on the same edges (sum n); blocks of 3 rows in 3 pickled
    parts give the same counts, points and per-bin sums as one pass in one block."""
    X, y = _data(1000, p)
    design = make_design(X, y)
    exact, sgd = _fits(design)
    whole = fit_view(design, exact.params, sgd.params)
    small = dataclasses.replace(design, table=dataclasses.replace(design.table, block_rows=3))
    parted = fit_view(small, exact.params, sgd.params, Passes(_pickling_map, 3))

    s = whole.spec
    u, v = (X[:, 0], y) if p == 1 else (y, design.matrix() @ exact.params)
    expected, _, _ = np.histogram2d(u, v, bins=[s.u_edges, s.v_edges])
    assert whole.counts.shape == (BINS, BINS)
    assert whole.counts.sum() == whole.n == 1000
    assert np.array_equal(whole.counts, expected.astype(np.int64))
    assert np.array_equal(parted.counts, whole.counts)
    np.testing.assert_allclose(parted.sums, whole.sums, rtol=1e-12, atol=1e-9)
    # predictions near 0 cancel: float64 rounding is relative to the terms' size
    np.testing.assert_allclose(parted.points[:, :2], np.column_stack([u, v]), rtol=0, atol=1e-13 * np.abs(y).max())
    np.testing.assert_allclose(parted.points, whole.points, rtol=0, atol=1e-13 * np.abs(y).max())
    if p > 1:  # per-bin sums of the exact and SGD predictions, by an independent grouping
        i = np.digitize(u, s.u_edges[1:-1])
        np.testing.assert_allclose(whole.sums[0], [v[i == b].sum() for b in range(BINS)], rtol=1e-9, atol=1e-9)
        sgd_pred = design.matrix() @ sgd.params
        np.testing.assert_allclose(whole.sums[1], [sgd_pred[i == b].sum() for b in range(BINS)], rtol=1e-9, atol=1e-9)


def test_a_parquet_table_in_row_groups_of_3_gives_the_same_view(tmp_path):
    """The stored Parquet, streamed in row groups of 3 rows over 3 parts, counts as the in-memory table."""
    X, y = _data(100, 3, seed=2)
    design = make_design(X, y)
    exact, sgd = _fits(design)
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"y": y, **{n: X[:, j] for j, n in enumerate(design.names)}}), path, row_group_size=3)
    columns = ("y", *design.names)
    table = ParquetTable(str(path), columns, 100, None, block_rows=3)
    streamed = dataclasses.replace(design, table=dataclasses.replace(table, stats=stats_of(table.blocks(), 4)))
    whole = fit_view(design, exact.params, sgd.params)
    parted = fit_view(streamed, exact.params, sgd.params, Passes(_pickling_map, 3))
    assert np.array_equal(parted.counts, whole.counts) and parted.n == 100
    np.testing.assert_allclose(parted.points, whole.points, rtol=0, atol=1e-13 * np.abs(y).max())


def test_predictions_beyond_the_axis_count_in_its_edge_bins_and_are_reported():
    """A view spec whose prediction axis is narrower than the predictions still counts every row."""
    X, y = _data(500, 2, seed=1)
    design = make_design(X, y)
    exact, sgd = _fits(design)
    pred = design.matrix() @ exact.params
    lo, hi = np.quantile(pred, [0.25, 0.75])
    spec = ViewSpec(True, np.linspace(y.min(), y.max(), BINS + 1), np.linspace(lo, hi, BINS + 1),
                    exact.params, sgd.params, keep_points=False)
    view = view_part(spec, design)
    assert view.points is None
    assert view.n == 500
    assert view.outside == np.count_nonzero((pred < lo) | (pred > hi))
    assert view.counts[:, 0].sum() == np.count_nonzero(pred < lo + (hi - lo) / BINS)
    assert view.counts[:, -1].sum() == np.count_nonzero(pred >= hi - (hi - lo) / BINS)


def _lines(fig) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {line.get_label(): (np.asarray(line.get_xdata()), np.asarray(line.get_ydata()))
            for line in fig.axes[0].get_lines()}


def test_small_data_is_every_point_with_curves_from_the_parameters():
    """The tutorial's ten points are drawn themselves; both curves are the parameters' predictions."""
    design = tutorial_design()
    exact, sgd = _fits(design)
    view = fit_view(design, exact.params, sgd.params)
    fig = plot_fit(design, view, exact, sgd)
    ax = fig.axes[0]
    assert not ax.get_images()
    np.testing.assert_array_equal(ax.collections[0].get_offsets(), np.column_stack([TUTORIAL_X, TUTORIAL_Y]))
    lines = _lines(fig)
    for label, params in (("exact least squares", exact.params), (f"torch {sgd.optimizer}", sgd.params)):
        x, yy = lines[label]
        assert x.min() == TUTORIAL_X.min() and x.max() == TUTORIAL_X.max()
        np.testing.assert_allclose(yy, params[0] + params[1] * x, rtol=1e-14)
    _png(png_bytes(fig))


@pytest.mark.parametrize("p", [1, 4])
def test_large_data_is_a_density_image_of_fixed_size(p):
    """Above POINTS_MAX rows: no point is drawn, the image holds the BINS x BINS counts, the curves
    (one feature) are the parameters' predictions on a grid, and the PNG stays small."""
    X, y = _data(POINTS_MAX + 1, p)
    design = make_design(X, y, degree=2 if p == 1 else 1)
    exact, sgd = _fits(design)
    view = fit_view(design, exact.params, sgd.params)
    assert view.points is None
    fig = plot_fit(design, view, exact, sgd)
    ax = fig.axes[0]
    assert not ax.collections
    [image] = [a for a in ax.get_images() if isinstance(a, AxesImage)]
    assert image.get_array().shape == (BINS, BINS) and image.get_array().sum() == POINTS_MAX + 1
    assert all(len(x) <= 400 for x, _ in _lines(fig).values())
    if p == 1:
        for label, params in (("exact least squares", exact.params), (f"torch {sgd.optimizer}", sgd.params)):
            x, yy = _lines(fig)[label]
            np.testing.assert_allclose(yy, design.matrix_of(x[:, None]) @ params, rtol=1e-14)
    else:
        x, mean = _lines(fig)["exact least squares, mean per bin"]
        rows = view.counts.sum(axis=1)
        np.testing.assert_allclose(mean[rows > 0], view.sums[0][rows > 0] / rows[rows > 0], rtol=1e-15)
    _png(png_bytes(fig))


@pytest.mark.parametrize("epochs", [100, 1_000_000])
def test_the_loss_curve_draws_at_most_loss_points_log_spaced_epochs(epochs):
    """1e2 or 1e6 epochs: the curve holds <= LOSS_POINTS epochs, first and last among them, each
    with its recorded loss."""
    design = tutorial_design()
    exact, sgd = _fits(design)
    losses = exact.mse * (1 + 1.0 / np.arange(1, epochs + 1))
    sgd = dataclasses.replace(sgd, losses=losses, epochs=epochs)
    fig = plot_loss(sgd, exact.mse)
    x, loss = _lines(fig)["training loss (MSE)"]
    assert len(x) == epochs if epochs <= LOSS_POINTS else LOSS_POINTS / 2 < len(x) <= LOSS_POINTS
    assert x[0] == 1 and x[-1] == epochs and np.all(np.diff(x) > 0)
    np.testing.assert_array_equal(loss, losses[x - 1])
    _png(png_bytes(fig))


def test_a_run_stopped_before_its_first_epoch_still_gets_both_plots():
    """A time limit can stop mini-batch training before one epoch completes: empty loss history."""
    design = tutorial_design()
    exact = fit_exact(design)
    sgd = dataclasses.replace(train_sgd(design, TrainConfig(epochs=2)), losses=np.empty(0), epochs=0,
                              stop_reason="timeout")
    pngs = make_plots_task.fn(design, exact, sgd)
    assert sorted(pngs) == ["fit.png", "loss.png"]
    for png in pngs.values():
        _png(png)


def test_a_one_epoch_run_draws_its_loss_as_a_point():
    """One epoch is one point: drawn with a marker (a line of one point is invisible)."""
    from tasks.evaluate.plots import plot_loss

    design = tutorial_design()
    sgd = train_sgd(design, TrainConfig(epochs=1, tol=0))
    line = plot_loss(sgd, fit_exact(design).mse).axes[0].lines[0]
    assert len(line.get_xdata()) == 1 and line.get_marker() == "o"


def test_a_diverged_model_leaves_its_curve_out():
    """Non-finite SGD parameters draw no SGD curve and break nothing."""
    design = tutorial_design()
    exact, sgd = _fits(design)
    sgd = dataclasses.replace(sgd, intercept=float("nan"), coefficients=(float("inf"),), stop_reason="diverged")
    fig = plot_fit(design, fit_view(design, exact.params, sgd.params), exact, sgd)
    assert np.isnan(_lines(fig)[f"torch {sgd.optimizer}"][1]).all()
    _png(png_bytes(fig))


def test_column_names_with_matplotlib_math_syntax_are_drawn_literally():
    """A name like 'a $x^$ b' is user data: it must not be parsed as mathtext (which raises)."""
    design = make_design(TUTORIAL_X, TUTORIAL_Y, names=("a $x^$ b",), target="$\\frac{y")
    exact, sgd = _fits(design)
    _png(make_plots_task.fn(design, exact, sgd)["fit.png"])


def test_merging_views_adds_counts_and_keeps_row_order():
    """FitView.merge: counts and sums add, points concatenate in part order."""
    design = tutorial_design()
    exact, sgd = _fits(design)
    spec = view_spec(design, exact.params, sgd.params)  # one set of edges, from the whole design
    a, b = (view_part(spec, part) for part in design.split(2))
    assert isinstance(a, FitView)
    merged = a.merge(b)
    assert merged.n == 10
    np.testing.assert_array_equal(merged.points, np.column_stack([TUTORIAL_X, TUTORIAL_Y]))
