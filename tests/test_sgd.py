"""The gradient-descent step: it reaches the exact fit, reproduces the tutorial, and stays on the device."""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest
import torch

from tasks.config import TrainConfig
from tasks.exact import fit_exact
from tasks.sgd import train_sgd
from tests.helpers import TUTORIAL_X, TUTORIAL_Y, make_design, max_rel_error, tutorial_design

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


def test_defaults_stop_early_once_the_loss_is_flat():
    """The default tol ends training soon after the optimum is reached, not at the epoch bound."""
    rng = np.random.default_rng(5)
    X = rng.uniform(-2, 6, size=(40, 2)) * [1.0, 100.0]
    y = 3.0 + X @ [1.5, -0.02] + rng.normal(0, 0.1, size=40)
    design = make_design(X, y)
    result = train_sgd(design, TrainConfig(device="cpu", epochs=2000))
    assert max_rel_error(result.params, fit_exact(design).params) < 1e-12
    assert result.stop_reason == "tol"
    assert result.epochs < 1000


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


def test_tutorial_mode_follows_a_plain_autograd_loop(tutorial_run):
    """The same start and 10000 steps of w -= lr * dL/dw by hand give the same losses and parameters."""
    from tasks.sgd import init_linear

    model = init_linear(1, True, torch.Generator().manual_seed(0), torch.float32)
    w = model.weight.detach().reshape(()).clone().requires_grad_(True)
    b = model.bias.detach().reshape(()).clone().requires_grad_(True)
    x = torch.tensor(TUTORIAL_X, dtype=torch.float32)
    y = torch.tensor(TUTORIAL_Y, dtype=torch.float32)
    lr = 0.001
    history = torch.empty(10000, dtype=torch.float32)
    for epoch in range(10000):
        pred = x * w + b
        loss = ((pred - y) ** 2).mean()
        loss.backward()
        with torch.no_grad():
            history[epoch] = loss
            w -= lr * w.grad
            b -= lr * b.grad
            w.grad = None
            b.grad = None

    np.testing.assert_allclose(tutorial_run.losses, history.double().numpy(), rtol=1e-4)
    np.testing.assert_allclose(
        tutorial_run.params, [b.detach().double().item(), w.detach().double().item()], rtol=1e-4
    )


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


def _from_sgd_module() -> bool:
    """Whether the caller of the patched method is tasks/sgd.py (torch's own internals are not ours)."""
    return sys._getframe(2).f_globals.get("__name__") == "tasks.sgd"


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
    """tasks/sgd.py never calls Tensor.item, and its host transfers (.cpu, .numpy, float, bool) are far
    fewer than the epochs: the per-epoch loop keeps the losses on the device."""
    epochs = 2000

    original_item = torch.Tensor.item

    def forbidden(self, *args, **kwargs):
        # Adam keeps its step counter on the CPU and reads it with .item(): that is torch's, not ours.
        if _from_sgd_module():
            raise AssertionError("Tensor.item() called in tasks/sgd.py: a host sync per call")
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
    import tasks.sgd

    cfg = dict(epochs=10**8, tol=0, device="cpu", lr=0.01, standardize=False)
    reference = train_sgd(tutorial_design(), TrainConfig(**cfg | dict(epochs=5, timeout=None)))
    monkeypatch.setattr(tasks.sgd, "time", _Clock())
    result = train_sgd(tutorial_design(), TrainConfig(**cfg, timeout=5.0))
    assert (result.stop_reason, result.epochs) == ("timeout", 5)
    assert result.params.tolist() == reference.params.tolist()
    np.testing.assert_array_equal(result.losses, reference.losses)


def test_a_mini_batch_epoch_cut_short_keeps_its_steps_but_is_not_counted(monkeypatch):
    """10 rows in batches of 3: the clock is read before batches 2, 3, 4 and at the epoch's end (4 per
    epoch). timeout 6 expires before the third batch of epoch 2: 1 epoch counted, its loss as in a
    1-epoch run, and the two steps of epoch 2 already taken stay in the parameters."""
    import tasks.sgd

    cfg = dict(batch_size=3, epochs=10**8, tol=0, device="cpu", lr=0.01, standardize=False)
    one_epoch = train_sgd(tutorial_design(), TrainConfig(**cfg | dict(epochs=1, timeout=None)))
    monkeypatch.setattr(tasks.sgd, "time", _Clock())
    result = train_sgd(tutorial_design(), TrainConfig(**cfg, timeout=6.0))
    assert (result.stop_reason, result.epochs) == ("timeout", 1)
    np.testing.assert_array_equal(result.losses, one_epoch.losses)
    assert result.params.tolist() != one_epoch.params.tolist()
