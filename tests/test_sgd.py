"""The gradient-descent step: it reaches the exact fit, reproduces the tutorial, and stays on the device."""

from __future__ import annotations

import sys
import time

import cloudpickle
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.config import TrainConfig
from tasks.exact.fit import fit_exact
from tasks.kernels.passes import Passes
from tasks.training.train import train_sgd
from tests.helpers import TUTORIAL_X, TUTORIAL_Y, make_design, max_rel_error, tutorial_design

pytestmark = pytest.mark.numeric  # run again under torch's other CPU kernels (make test)

# The tutorial exactly: `linreg run --lr 0.001 --epochs 10000 --tol 0 --no-standardize --dtype float32`.
TUTORIAL = dict(lr=0.001, epochs=10000, tol=0, standardize=False, dtype="float32", device="cpu")


@pytest.fixture(scope="module")
def exact_tutorial():
    return fit_exact(tutorial_design())


@pytest.fixture(scope="module")
def tutorial_run():
    """One run in tutorial mode, shared by the tests that inspect it (10000 float32 epochs)."""
    return train_sgd(tutorial_design(), TrainConfig(**TUTORIAL))


# --- (a) the defaults converge ----------------------------------------------------------------


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "lbfgs"])
def test_defaults_reach_the_exact_fit_to_1e_6(optimizer, exact_tutorial):
    """With the defaults (auto lr, standardized, float64) sgd, momentum and lbfgs reach the exact fit."""
    result = train_sgd(tutorial_design(), TrainConfig(optimizer=optimizer, device="cpu"))
    assert result.stop_reason == "tol"
    assert max_rel_error(result.params, exact_tutorial.params) < 1e-6
    assert result.final_loss == pytest.approx(exact_tutorial.mse, rel=1e-9)


def test_defaults_with_adam_reach_the_exact_fit_to_1e_4(exact_tutorial):
    """Adam's steps do not shrink with the gradient, so it gets a looser bound: 1e-4."""
    result = train_sgd(tutorial_design(), TrainConfig(optimizer="adam", device="cpu"))
    assert result.stop_reason != "diverged"
    assert max_rel_error(result.params, exact_tutorial.params) < 1e-4


def test_defaults_reach_the_exact_fit_with_two_features_and_no_intercept():
    """Coefficients are mapped back to the original scale for several features, without intercept too."""
    rng = np.random.default_rng(5)
    X = rng.uniform(-2, 6, size=(40, 2)) * [1.0, 100.0]
    y = X @ [1.5, -0.02] + rng.normal(0, 0.1, size=40)
    for intercept in (True, False):
        design = make_design(X, y + 3.0 * intercept, intercept=intercept)
        result = train_sgd(design, TrainConfig(device="cpu", epochs=2000))
        assert (result.intercept is None) == (not intercept)
        assert max_rel_error(result.params, fit_exact(design).params) < 1e-6


def test_defaults_stop_once_the_newton_estimate_is_within_the_margin():
    """The default stop rule ends training as soon as the estimated distance to the optimum (the
    Newton step of the gradient) is under MARGIN * rtol, long before the epoch bound, and the
    estimate agrees with the real distance to the exact fit."""
    from tasks.training.stop_rule import MARGIN

    rng = np.random.default_rng(5)
    X = rng.uniform(-2, 6, size=(40, 2)) * [1.0, 100.0]
    y = 3.0 + X @ [1.5, -0.02] + rng.normal(0, 0.1, size=40)
    design = make_design(X, y)
    result = train_sgd(design, TrainConfig(device="cpu", epochs=2000), rtol=1e-6)
    error = max_rel_error(result.params, fit_exact(design).params)
    assert result.stop_reason == "tol"
    # cond(H) = 2.2 standardized: gradient descent at lr 1/L shrinks the error by 1 - 1/2.2 per
    # epoch, from about 1 to 1e-10 in 38 epochs; checks come after 1, 2, 4, ... epochs: 64.
    assert result.epochs <= 64
    assert result.distance <= MARGIN * 1e-6
    # The estimate is the real distance to within its rounding floor (test_training_convergence).
    assert abs(error - result.distance) <= result.distance_floor
    assert error <= MARGIN * 1e-6 + result.distance_floor


# --- (b), (c) the tutorial ------------------------------------------------------------------------


def test_tutorial_mode_lands_where_the_tutorial_does(tutorial_run, exact_tutorial):
    """lr 0.001, 10000 epochs, raw data, float32: b1 in [9.62, 9.64], b0 in [0.81, 0.90], not converged."""
    assert 9.62 <= tutorial_run.coefficients[0] <= 9.64
    assert 0.81 <= tutorial_run.intercept <= 0.90
    assert tutorial_run.stop_reason == "epochs"
    assert tutorial_run.epochs == 10000
    assert len(tutorial_run.losses) == 10000
    assert tutorial_run.lr == 0.001
    assert tutorial_run.dtype == "float32"
    # Not converged: still farther from the exact fit than float32's verdict tolerance (1e-4).
    assert max_rel_error(tutorial_run.params, exact_tutorial.params) > 1e-4


def test_tutorial_mode_follows_the_tutorials_autograd_loop(tutorial_run):
    """The tutorial's loop (nn.Linear, MSELoss, torch.optim.SGD, autograd) from the same initial
    weights: the same 10000 losses and the same coefficients, to float32 rounding."""
    from tasks.training.train import init_linear

    model = init_linear(1, True, torch.Generator().manual_seed(0), torch.float32)
    x = torch.tensor(TUTORIAL_X, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(TUTORIAL_Y, dtype=torch.float32).unsqueeze(1)
    opt = torch.optim.SGD(model.parameters(), lr=0.001)
    loss_fn = torch.nn.MSELoss()
    history = []
    for _ in range(10000):
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.detach())

    # Both loops compute the same float32 arithmetic but sum in another order (our dot product of the
    # residuals, MSELoss's mean): each loss is a sum of n = 10 squares, exact to gamma_(n+1) = 11 u
    # relative on either side (u = 2^-24), and the parameters, a contraction of the same steps, agree
    # to a few ulps; 32 (n + 1) u = 2.1e-5 bounds the losses and 8 ulps (2^-23 each) the parameters.
    u = 2.0**-24
    np.testing.assert_allclose(tutorial_run.losses, torch.stack(history).double().numpy(), rtol=32 * 11 * u)
    reference = [model.bias.detach().double().item(), model.weight.detach().double().item()]
    np.testing.assert_allclose(tutorial_run.params, reference, rtol=8 * 2.0**-23)


# --- (d) seeds ------------------------------------------------------------------------------------


def test_the_same_seed_gives_identical_results():
    """Two runs with one seed agree bit for bit: parameters and the whole loss history."""
    cfg = TrainConfig(epochs=50, tol=0, seed=7, device="cpu", lr=0.01, standardize=False)
    first, second = train_sgd(tutorial_design(), cfg), train_sgd(tutorial_design(), cfg)
    assert first.params.tolist() == second.params.tolist()
    np.testing.assert_array_equal(first.losses, second.losses)


def test_a_different_seed_gives_a_different_initial_loss():
    """The seed decides the initial weights, hence the first recorded loss."""
    losses = {
        seed: train_sgd(tutorial_design(), TrainConfig(epochs=8, tol=0, seed=seed, device="cpu")).losses[0]
        for seed in (0, 1)
    }
    assert losses[0] != losses[1]


# --- (e) divergence ---------------------------------------------------------------------------------


def test_divergence_is_a_result_not_a_crash():
    """lr 10 on the raw data blows up; train_sgd returns stop_reason 'diverged' instead of raising."""
    cfg = TrainConfig(lr=10.0, standardize=False, device="cpu")
    result = train_sgd(tutorial_design(), cfg)
    assert result.stop_reason == "diverged"
    assert result.diverged
    assert result.epochs < cfg.epochs
    assert len(result.losses) == result.epochs


# --- (f) no host sync per epoch ----------------------------------------------------------------------


# The training loop and what it calls per epoch or per check (torch's own internals are not ours).
_TRAINING_MODULES = {"tasks.training.train", "tasks.training.stop_rule", "tasks.kernels.training_rows"}


def _from_sgd_module() -> bool:
    """Whether the caller of the patched method is one of _TRAINING_MODULES."""
    return sys._getframe(2).f_globals.get("__name__") in _TRAINING_MODULES


def _counting(monkeypatch, name: str, counts: dict[str, int]) -> None:
    original = getattr(torch.Tensor, name)

    def wrapper(self, *args, **kwargs):
        if _from_sgd_module():
            counts[name] = counts.get(name, 0) + 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, name, wrapper)


@pytest.mark.parametrize(
    "options",
    [dict(optimizer="sgd"), dict(optimizer="momentum"), dict(optimizer="adam"), dict(batch_size=4)],
    ids=["sgd", "momentum", "adam", "mini-batch"],
)
def test_the_training_loop_never_calls_item_and_syncs_rarely(monkeypatch, options):
    """The training loop (tasks/training/train.py, its stop rule and its rows) never calls Tensor.item, and its
    host transfers (.cpu, .numpy, float, bool) are far fewer than the epochs: the per-epoch loop
    keeps the losses on the device."""
    epochs = 2000

    original_item = torch.Tensor.item

    def forbidden(self, *args, **kwargs):
        # Adam keeps its step counter on the CPU and reads it with .item(): that is torch's, not ours.
        if _from_sgd_module():
            raise AssertionError("Tensor.item() called by the training loop: a host sync per call")
        return original_item(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "item", forbidden)
    counts: dict[str, int] = {}
    for name in ("cpu", "numpy", "tolist", "__float__", "__bool__"):
        _counting(monkeypatch, name, counts)
    cfg = TrainConfig(epochs=epochs, tol=0, device="cpu", **options)
    result = train_sgd(tutorial_design(), cfg)
    assert result.epochs == epochs
    assert np.all(np.isfinite(result.losses))
    assert sum(counts.values()) <= epochs // 20, counts


# --- (g) mini-batches ---------------------------------------------------------------------------------


def test_mini_batch_training_runs_and_is_reproducible(exact_tutorial):
    """batch_size 3: the same seed gives the same result, another seed another, and the loss falls."""
    run = lambda seed: train_sgd(  # noqa: E731
        tutorial_design(), TrainConfig(batch_size=3, epochs=300, seed=seed, device="cpu")
    )
    first, again, other = run(0), run(0), run(1)
    assert first.params.tolist() == again.params.tolist()
    np.testing.assert_array_equal(first.losses, again.losses)
    assert first.params.tolist() != other.params.tolist()
    assert first.stop_reason != "diverged"
    assert len(first.losses) == first.epochs
    assert np.all(np.isfinite(first.losses))
    # Noisy steps leave it near, not at, the optimum.
    assert first.final_loss < 1.5 * exact_tutorial.mse < first.losses[0]


# --- (h) a badly-scaled design ------------------------------------------------------------------------


def _badly_scaled_design():
    """x in [1e6, 1e6 + 10] and a quadratic: x and x^2 are nearly collinear on the raw scale."""
    rng = np.random.default_rng(0)
    x = np.sort(rng.uniform(1e6, 1e6 + 10, size=30))
    u = x - 1e6
    y = 3 + 0.5 * u - 0.02 * u**2 + rng.normal(0, 0.1, size=x.size)
    return make_design(x, y, degree=2)


@pytest.mark.parametrize(
    "optimizer",
    ["sgd", "momentum", "adam", "lbfgs"],
)
def test_auto_lr_with_standardization_does_not_diverge_on_a_badly_scaled_design(optimizer):
    """--lr auto with --standardize on x in [1e6, 1e6 + 10], degree 2: no blow-up; the loss does not grow."""
    design = _badly_scaled_design()
    result = train_sgd(design, TrainConfig(optimizer=optimizer, epochs=2000, device="cpu"))
    assert result.stop_reason != "diverged"
    assert np.all(np.isfinite(result.params))
    assert np.all(np.isfinite(result.losses))
    assert result.final_loss <= result.losses[0]


# --- (i) the time limit ---------------------------------------------------------------------------------


@pytest.mark.parametrize("options", [dict(), dict(batch_size=3)], ids=["full-batch", "mini-batch"])
def test_a_time_limit_stops_an_endless_run_with_stop_reason_timeout(options):
    """timeout 0.05 s, 1e8 epochs and tol 0: training stops by itself, one loss per epoch done."""
    cfg = TrainConfig(timeout=0.05, epochs=10**8, tol=0, device="cpu", **options)
    result = train_sgd(tutorial_design(), cfg)
    assert result.stop_reason == "timeout"
    assert result.epochs < 10**8
    assert len(result.losses) == result.epochs
    assert np.all(np.isfinite(result.params))
    assert result.time_limit == 0.05


def test_no_time_limit_runs_to_the_epoch_cap():
    """timeout None: a tol-0 run ends only when the epochs run out."""
    result = train_sgd(tutorial_design(), TrainConfig(timeout=None, epochs=300, tol=0, device="cpu"))
    assert result.stop_reason == "epochs"
    assert result.epochs == len(result.losses) == 300
    assert result.time_limit is None


class _Clock:
    """A fake time.monotonic that advances one second per reading: the deadline passes at a known check."""

    def __init__(self) -> None:
        self.now = -1.0

    def monotonic(self) -> float:
        self.now += 1.0
        return self.now

    perf_counter = staticmethod(time.perf_counter)


def test_at_the_deadline_the_parameters_and_losses_are_those_of_the_epochs_done(monkeypatch):
    """Full batch, a clock read once at the start and once per epoch: timeout 5 stops after exactly
    5 epochs, with the parameters and loss history of a 5-epoch run without a limit."""
    import tasks.training.train

    cfg = dict(epochs=10**8, tol=0, device="cpu", lr=0.01, standardize=False)
    reference = train_sgd(tutorial_design(), TrainConfig(**cfg | dict(epochs=5, timeout=None)))
    monkeypatch.setattr(tasks.training.train, "time", _Clock())
    result = train_sgd(tutorial_design(), TrainConfig(**cfg, timeout=5.0))
    assert (result.stop_reason, result.epochs) == ("timeout", 5)
    assert result.params.tolist() == reference.params.tolist()
    np.testing.assert_array_equal(result.losses, reference.losses)


def test_a_mini_batch_epoch_cut_short_keeps_its_steps_but_is_not_counted(monkeypatch):
    """10 rows in batches of 3: the clock is read before batches 2, 3, 4 and at the epoch's end (4 per
    epoch). timeout 6 expires before the third batch of epoch 2: 1 epoch counted, its loss as in a
    1-epoch run, and the two steps of epoch 2 already taken stay in the parameters."""
    import tasks.training.train

    cfg = dict(batch_size=3, epochs=10**8, tol=0, device="cpu", lr=0.01, standardize=False)
    one_epoch = train_sgd(tutorial_design(), TrainConfig(**cfg | dict(epochs=1, timeout=None)))
    monkeypatch.setattr(tasks.training.train, "time", _Clock())
    result = train_sgd(tutorial_design(), TrainConfig(**cfg, timeout=6.0))
    assert (result.stop_reason, result.epochs) == ("timeout", 1)
    np.testing.assert_array_equal(result.losses, one_epoch.losses)
    assert result.params.tolist() != one_epoch.params.tolist()


# --- (j) large designs stream ---------------------------------------------------------------------------


# The same sums in another order (3-row blocks, 3 parts, another kernel's vector width): each epoch's
# gradient moves by a few ulps of |A|^T |r|; 30 epochs of a stable iteration on this design (cond(H)
# about 30 after standardization) keep the difference under 30 p u cond(H) = 6e-13 relative to the
# parameters; 1e-9 leaves three decades for a line search that ends one evaluation apart.
ORDER_RTOL = 1e-9


def _two_feature_design(block_rows: int = 65536):
    rng = np.random.default_rng(3)
    X = rng.uniform(-2, 6, size=(40, 2)) * [1.0, 100.0]
    y = 3.0 + X @ [1.5, -0.02] + rng.normal(0, 0.1, size=40)
    from tasks.kernels.design import Design

    return Design.from_arrays(X, y, ("x1", "x2"), block_rows=block_rows)


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam", "lbfgs"])
def test_a_streamed_full_batch_run_follows_the_held_one(monkeypatch, optimizer):
    """With no memory budget the design streams in blocks of 3 rows: the same losses, epoch by
    epoch, and the same parameters as the run on tensors held in memory, to float64 rounding."""
    import tasks.training.train

    cfg = TrainConfig(optimizer=optimizer, epochs=30, tol=0, device="cpu")
    held = train_sgd(_two_feature_design(), cfg)
    monkeypatch.setattr(tasks.training.train, "MEMORY_BUDGET", 0)
    streamed = train_sgd(_two_feature_design(block_rows=3), cfg)
    np.testing.assert_allclose(streamed.losses, held.losses, rtol=ORDER_RTOL)
    np.testing.assert_allclose(streamed.params, held.params, rtol=ORDER_RTOL)


def test_streamed_defaults_reach_the_exact_fit(monkeypatch):
    """Streamed in blocks of 3 rows, the default run stops on "tol" at the exact fit."""
    import tasks.training.train

    monkeypatch.setattr(tasks.training.train, "MEMORY_BUDGET", 0)
    design = _two_feature_design(block_rows=3)
    for precondition in (False, True):
        result = train_sgd(design, TrainConfig(device="cpu", precondition=precondition))
        assert result.stop_reason == "tol"
        assert max_rel_error(result.params, fit_exact(design).params) < 1e-9


@given(rows=st.integers(1, 40), block_rows=st.integers(1, 9), batch=st.integers(1, 12), seed=st.integers(0, 9))
@settings(max_examples=40, deadline=None)
def test_a_streamed_mini_batch_epoch_visits_every_row_once(rows, block_rows, batch, seed):
    """Shuffled blocks, shuffled rows within each: the batches of one epoch are a permutation of all
    rows, every batch full but the last, and another seed gives another order."""
    from tasks.kernels.design import Design
    from tasks.kernels.training_rows import StreamedRows
    from tasks.kernels.tsqr import design_geometry
    from tasks.training.setup import training_coordinates

    X = np.arange(rows, dtype=float)[:, None]
    design = Design.from_arrays(X, 2 * X[:, 0] + 1, ("x",), block_rows=block_rows)
    coords = training_coordinates(design, design_geometry(design), False, False)
    data = StreamedRows(design, coords.row_map, torch.zeros(3, dtype=torch.float64), torch.zeros(2, dtype=torch.float64))
    batches = list(data.batches(torch.Generator().manual_seed(seed), batch))
    assert all(len(b) == batch for b in batches[:-1]) and 1 <= len(batches[-1]) <= batch
    seen = torch.cat(batches)[:, 1].numpy()  # the x column of [1 x y]
    assert sorted(seen.tolist()) == X[:, 0].tolist()


def test_in_memory_mini_batches_follow_torch_randperm():
    """Held in memory, a mini-batch epoch takes the rows in torch.randperm(n) order from the run's
    generator (after the initial weights), batch by batch: as a plain loop over the same order does."""
    from tasks.training.train import init_linear

    cfg = TrainConfig(batch_size=4, epochs=5, tol=0, lr=0.01, standardize=False, device="cpu", dtype="float64")
    result = train_sgd(tutorial_design(), cfg)
    generator = torch.Generator().manual_seed(0)
    model = init_linear(1, True, generator, torch.float64)
    w, b = model.weight.detach()[0, 0].item(), model.bias.detach()[0].item()
    x, y = TUTORIAL_X, TUTORIAL_Y
    for _ in range(5):
        order = torch.randperm(10, generator=generator).numpy()
        for lo in range(0, 10, 4):
            idx = order[lo:lo + 4]
            r = w * x[idx] + b - y[idx]
            gw, gb = 2 * np.mean(r * x[idx]), 2 * np.mean(r)
            w, b = w - 0.01 * gw, b - 0.01 * gb
    np.testing.assert_allclose(result.params, [b, w], rtol=1e-12)


# --- (k) set-up from the statistics and the geometry, no pass over the rows -------------------------------


def _rows(coords):
    """[A y] of the whole design, for checking the set-up against explicit matrices."""
    return np.vstack([coords.row_map.rows(coords.design, f, y) for f, y in coords.design.blocks()])


@pytest.mark.parametrize("intercept", [True, False])
def test_scaling_from_the_statistics_is_numpys_population_std(intercept):
    """x_scale and y_scale: numpy's population std with an intercept, root mean square without."""
    from tasks.kernels.tsqr import design_geometry
    from tasks.training.setup import Scaling

    design = _two_feature_design()
    g = design_geometry(design)
    s = Scaling.from_stats(g.terms, g.y, intercept, True)
    X, y = design.terms, design.y
    if intercept:
        np.testing.assert_allclose(s.x_shift, X.mean(0), rtol=1e-14)
        np.testing.assert_allclose(s.x_scale, X.std(0), rtol=1e-13)
        assert (s.y_shift, s.y_scale) == pytest.approx((y.mean(), y.std()), rel=1e-13)
    else:
        np.testing.assert_allclose(s.x_scale, np.sqrt(np.mean(X**2, 0)), rtol=1e-13)
        assert (s.y_shift, s.y_scale) == pytest.approx((0.0, np.sqrt(np.mean(y**2))), rel=1e-13)


@pytest.mark.parametrize("precondition", [False, True])
@pytest.mark.parametrize("degree", [1, 3])
def test_the_curvature_from_r_is_that_of_the_explicit_training_rows(precondition, degree):
    """L and mu from the p x p geometry equal the extreme eigenvalues of 2/n A^T A of the explicit
    rows; with precondition A^T A / n is I and the bias column is 1; the row bound holds."""
    from tasks.kernels.tsqr import design_geometry
    from tasks.training.setup import training_coordinates

    rng = np.random.default_rng(1)
    x = rng.uniform(2, 9, size=(50, 1 if degree > 1 else 2))
    design = make_design(x, rng.normal(size=50), degree=degree)
    coords = training_coordinates(design, design_geometry(design), True, precondition)
    A = _rows(coords)[:, :-1]
    eig = np.linalg.eigvalsh(2 / design.n * A.T @ A)
    assert coords.curvature == pytest.approx((eig[-1], eig[0]), rel=1e-9)
    assert coords.row_map.norm_bound(design, coords.geometry.terms) >= np.max(np.sum(A**2, axis=1)) * (1 - 1e-12)
    if precondition:
        np.testing.assert_allclose(A.T @ A / design.n, np.eye(design.n_params), atol=1e-12)
        assert np.all(A[:, 0] == 1.0)


@pytest.mark.parametrize("precondition", [False, True])
def test_weights_map_back_exactly_and_the_newton_step_lands_on_the_optimum(precondition):
    """For any theta: X beta(theta) = y_shift + y_scale A theta (the map back; a cubic on [2, 9]),
    and on x in [1e6, 1e6 + 10] beta(theta) minus the Newton step K g(theta), g the explicit
    gradient, is the exact fit."""
    from tasks.kernels.tsqr import design_geometry
    from tasks.training.setup import training_coordinates
    from tasks.training.stop_rule import newton_map

    rng = np.random.default_rng(2)
    for design, check in ((make_design(rng.uniform(2, 9, 40), rng.normal(size=40), degree=3), "map"),
                          (_badly_scaled_design(), "newton")):
        coords = training_coordinates(design, design_geometry(design), True, precondition)
        Ay = _rows(coords)
        A, ys = Ay[:, :-1], Ay[:, -1]
        theta = rng.normal(size=design.n_params)
        beta = coords.to_original(theta)
        if check == "map":
            s = coords.scaling
            np.testing.assert_allclose(design.matrix() @ beta, s.y_shift + s.y_scale * (A @ theta), rtol=1e-10)
        else:
            grad = 2 / design.n * A.T @ (A @ theta - ys)
            np.testing.assert_allclose(beta - newton_map(coords) @ grad, fit_exact(design).params, rtol=1e-6)


class _PicklingMap:
    """A Mapper that ships fn and each part through cloudpickle, as flows.dask.task_map does to Dask
    workers, then runs them here; passes: how many parts each call had."""

    def __init__(self) -> None:
        self.passes: list[int] = []

    def __call__(self, fn, parts):
        self.passes.append(len(parts))
        fn = cloudpickle.loads(cloudpickle.dumps(fn))
        return [fn(cloudpickle.loads(cloudpickle.dumps(part))) for part in parts]


@pytest.mark.parametrize("rows", ["held", "streamed", "streamed in 3 pickled parts", "streamed, compiled",
                                  "streamed in 3 pickled parts, compiled"])
def test_the_passes_over_the_rows_are_those_of_the_explicit_rows(rows, monkeypatch):
    """full() = n f(ref) and its gradient, then relative(ref) = n (f(theta) - f(ref)) and the gradient
    at theta, and rounding(K) = the stop rule's rounding sums, held or streamed in blocks of 3 rows (one part,
    or 3 parts through a pickling mapper; on the numpy kernels or the compiled one), against the
    explicit float64 rows (the loss difference and the rounding sums in exact fractions)."""
    from fractions import Fraction

    from tasks.kernels import compiled
    from tasks.kernels.training_rows import HeldRows, StreamedRows
    from tasks.kernels.tsqr import design_geometry
    from tasks.training.setup import training_coordinates

    if "compiled" in rows:
        if not compiled.usable():
            pytest.skip("numba does not run here")
        monkeypatch.setattr(compiled, "MIN_ROWS", 0)  # every part's passes on the compiled kernel

    design = _two_feature_design(block_rows=3)
    coords = training_coordinates(design, design_geometry(design), True, False)
    theta_y = torch.tensor([0.3, -0.2, 0.7, -1.0], dtype=torch.float64)
    ref = torch.tensor([0.1, 0.4, -0.5], dtype=torch.float64)
    grad, mapper = torch.zeros(3, dtype=torch.float64), _PicklingMap()
    data = (HeldRows(design, coords.row_map, theta_y, grad, slots=4) if rows == "held" else
            StreamedRows(design, coords.row_map, theta_y, grad, *((Passes(mapper, 3),) if "parts" in rows else ())))
    Ay = _rows(coords)
    A, ys = Ay[:, :-1], Ay[:, -1]
    r1, r0 = A @ theta_y[:3].numpy() - ys, A @ ref.numpy() - ys
    theta_y[:3] = ref
    assert float(data.full()) == pytest.approx(r0 @ r0, rel=1e-13)  # the residual L-BFGS's first call leaves
    np.testing.assert_allclose(data.grad.numpy(), 2 / design.n * A.T @ r0, rtol=1e-12)
    theta_y[:3] = torch.tensor([0.3, -0.2, 0.7], dtype=torch.float64)
    got = float(data.relative(ref))
    exact = sum(Fraction(v) ** 2 for v in r1) - sum(Fraction(v) ** 2 for v in r0)
    assert got == pytest.approx(float(exact), rel=1e-12)
    np.testing.assert_allclose(data.grad.numpy(), 2 / design.n * A.T @ r1, rtol=1e-12)
    # The rounding sums of the stop rule's floor, row by row in exact fractions.
    K = np.array([[2.0, -1.0, 0.5], [0.25, 3.0, -2.0], [1.0, 1.0, 1.0]])
    tv = [Fraction(v) for v in theta_y.numpy()]
    sums = [[Fraction(0)] * 3, [Fraction(0)] * 3]
    for row in Ay:
        a = [Fraction(v) for v in row]
        r = sum(x * t for x, t in zip(a, tv))
        e = sum(abs(x) * abs(t) for x, t in zip(a, tv))
        for j in range(3):
            sums[0][j] += sum(Fraction(K[j, k]) * a[k] for k in range(3)) ** 2 * e**2
            sums[1][j] += a[j] ** 2 * r**2
    np.testing.assert_allclose(data.rounding(K), np.array(sums, dtype=float), rtol=1e-12)
    assert mapper.passes == ([3, 3, 3] if "parts" in rows else [])


# --- (l) streamed passes map over parts ---------------------------------------------------------------------


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam", "lbfgs"])
def test_streamed_full_batch_training_over_3_pickled_parts_equals_one_part(monkeypatch, optimizer):
    """Streamed in blocks of 3 rows, every full-batch epoch a sum over 3 parts that travel through
    cloudpickle: the losses, epoch by epoch, and the parameters of the one-part run, to float64
    rounding; every pass (30 epochs, L-BFGS's line search too) went through the mapper."""
    import tasks.training.train

    monkeypatch.setattr(tasks.training.train, "MEMORY_BUDGET", 0)
    design, cfg = _two_feature_design(block_rows=3), TrainConfig(optimizer=optimizer, epochs=30, tol=0, device="cpu")
    one, mapper = train_sgd(design, cfg), _PicklingMap()
    three = train_sgd(design, cfg, passes=Passes(mapper, 3))
    assert len(mapper.passes) >= 31 and set(mapper.passes) == {3}  # 30 epochs and the final loss
    np.testing.assert_allclose(three.losses, one.losses, rtol=ORDER_RTOL)
    np.testing.assert_allclose(three.params, one.params, rtol=ORDER_RTOL)


@pytest.mark.parametrize("kernels", ["numpy", "compiled"])
def test_a_streamed_parquet_design_trains_over_parts_of_row_groups(monkeypatch, tmp_path, kernels):
    """A Parquet file of 8 row groups, streamed in blocks of 3 rows over 3 pickled parts (the path
    travels, each part reads its own row groups): the default run stops on "tol" at the exact fit,
    as the run on rows held in memory does, in the same number of epochs; its full passes on the
    numpy kernels or the compiled one."""
    import tasks.training.train
    from tasks.kernels import compiled

    if kernels == "compiled":
        if not compiled.usable():
            pytest.skip("numba does not run here")
        monkeypatch.setattr(compiled, "MIN_ROWS", 0)
    from tasks.kernels.design import Design
    from tasks.kernels.table import ParquetTable

    held = _two_feature_design()
    frame = pa.table({"y": held.y, "x1": held.features[:, 0], "x2": held.features[:, 1]})
    pq.write_table(frame, tmp_path / "rows.parquet", row_group_size=5)
    table = ParquetTable(str(tmp_path / "rows.parquet"), ("y", "x1", "x2"), held.n, held.stats, block_rows=3)
    design = Design(table, ("x1", "x2"), "y")
    reference = train_sgd(held, TrainConfig(device="cpu"))
    monkeypatch.setattr(tasks.training.train, "MEMORY_BUDGET", 0)
    mapper = _PicklingMap()
    streamed = train_sgd(design, TrainConfig(device="cpu"), passes=Passes(mapper, 3))
    assert mapper.passes and set(mapper.passes) == {3}
    assert (streamed.stop_reason, streamed.epochs) == ("tol", reference.epochs)
    assert max_rel_error(streamed.params, fit_exact(held).params) < 1e-9


def test_held_rows_and_mini_batch_steps_stay_out_of_the_mapper(monkeypatch):
    """Rows held in memory never go through the mapper; streamed mini-batches take their steps here,
    and only the passes of the 10 checks (after epochs 1, 2, 4, ..., 256, 300: the loss and gradient,
    and at most once beside it the rounding bound) map over parts."""
    import tasks.training.train

    design, mapper = _two_feature_design(block_rows=3), _PicklingMap()
    train_sgd(design, TrainConfig(device="cpu", epochs=300), passes=Passes(mapper, 3))
    train_sgd(design, TrainConfig(device="cpu", epochs=300, batch_size=4, tol=0), passes=Passes(mapper, 3))
    assert mapper.passes == []
    monkeypatch.setattr(tasks.training.train, "MEMORY_BUDGET", 0)
    result = train_sgd(design, TrainConfig(device="cpu", epochs=300, batch_size=4), passes=Passes(mapper, 3))
    assert result.epochs == 300
    assert 10 <= len(mapper.passes) <= 20 and set(mapper.passes) == {3}


def test_the_last_full_pass_of_streamed_rows_gathers_the_rounding_sums_of_a_pass_of_their_own():
    """The last check's full pass also sums what the noise floor needs (one read of the rows instead
    of two): the same sums, bit for bit; once theta moves, rounding() reads the rows again."""
    from tasks.kernels.design import Design
    from tasks.kernels.training_rows import StreamedRows
    from tasks.kernels.tsqr import design_geometry
    from tasks.training.setup import training_coordinates

    rng = np.random.default_rng(4)
    x = rng.normal(size=(1000, 3))
    design = Design.from_arrays(x, x @ [1.0, 2.0, 3.0] + rng.normal(size=1000), ("a", "b", "c"), block_rows=128)
    coords = training_coordinates(design, design_geometry(design), True, False)
    theta_y = torch.tensor([0.1, 0.2, -0.3, 0.4, -1.0], dtype=torch.float64)
    rows = StreamedRows(design, coords.row_map, theta_y, torch.zeros(4, dtype=torch.float64))
    K = rng.normal(size=(4, 4))
    alone = rows.rounding(K)
    rows.full(K)
    np.testing.assert_array_equal(rows.rounding(K), alone)
    theta_y[1] += 1.0
    assert not np.array_equal(rows.rounding(K), alone)
