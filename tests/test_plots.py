"""The plots: valid PNG figures for every outcome of training, including none at all."""

from __future__ import annotations

import dataclasses

import numpy as np

from tasks.artifacts import png_bytes
from tasks.config import TrainConfig
from tasks.exact import fit_exact
from tasks.plots import plot_fit, plot_loss
from tasks.sgd import train_sgd
from tests.helpers import tutorial_design

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_a_run_stopped_before_its_first_epoch_still_gets_both_plots():
    """A time limit can stop mini-batch training before one epoch completes: empty loss history."""
    design = tutorial_design()
    exact = fit_exact(design)
    sgd = dataclasses.replace(train_sgd(design, TrainConfig(epochs=2)), losses=np.empty(0), epochs=0,
                              stop_reason="timeout")
    for fig in (plot_fit(design, exact, sgd), plot_loss(sgd, exact.mse)):
        assert png_bytes(fig).startswith(PNG_SIGNATURE)


def test_column_names_with_matplotlib_math_syntax_are_drawn_literally():
    """A name like 'a $x^$ b' is user data: it must not be parsed as mathtext (which raises)."""
    from tests.helpers import TUTORIAL_X, TUTORIAL_Y, make_design

    design = make_design(TUTORIAL_X, TUTORIAL_Y, names=("a $x^$ b",), target="$\\frac{y")
    exact = fit_exact(design)
    sgd = train_sgd(design, TrainConfig(epochs=2))
    assert png_bytes(plot_fit(design, exact, sgd)).startswith(PNG_SIGNATURE)
