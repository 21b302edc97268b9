"""What training reached (SGDResult): the parameters on the original scale, the losses, why it stopped."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tasks.kernels.affine import parameter_vector
from tasks.training.setup import Scaling


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
        return parameter_vector(self.intercept, self.coefficients)
