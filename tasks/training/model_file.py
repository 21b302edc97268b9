"""sgd_model.pt: the trained torch model as plain tensors, safe to load from an untrusted folder.

The file is torch.save of a dict holding only str, int, bool, lists and tensors, so that
torch.load(path, weights_only=True) reads it: its restricted unpickler builds no other object.
Two nn.Linear(q, 1) state_dicts ("bias" only with an intercept):
  state_dict  float64, on the original term values [terms]; its numbers are coefficients.json "sgd";
  trained     as trained, in its dtype, on a = [1, terms] @ input_map (no 1 without an intercept);
              y_shift + y_scale * trained(a) is state_dict's model, beta = y_scale N theta + y_shift e_0,
              up to the rounding of input_map (the float of N[:, k:]). With weights (the key "weights"
              names their column), training ran on the whitened rows s [1, terms], s = sqrt(w):
              a = s [1, terms] @ input_map, the bias multiplies s, and s y_shift + y_scale (s bias +
              a @ weight) is s times state_dict's model.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from tasks.errors import UserInputError

if TYPE_CHECKING:  # annotations only: `linreg predict` loads models without Prefect or the trainer
    from tasks.kernels.design import Design
    from tasks.training.train import SGDResult

FORMAT = "linreg-flow/sgd-model/1"


def _linear_state(params: np.ndarray, intercept: bool, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The state_dict of an nn.Linear(q, 1) from params = [bias, weight] (no bias without an intercept)."""
    k = int(intercept)
    values = torch.tensor(np.asarray(params, dtype=np.float64)).to(dtype)
    state = {"weight": values[k:].reshape(1, -1).clone()}
    if k:
        state["bias"] = values[:1].clone()
    return state


def sgd_model_doc(design: Design, sgd: SGDResult, weights: str | None = None) -> dict:
    """The dict sgd_model.pt holds, from a training result that recorded its model (train_sgd does);
    weights: the weights' column of a weighted fit."""
    if sgd.trained is None or sgd.input_map is None or sgd.scaling is None:
        raise ValueError("this SGDResult did not record the model as trained (trained, input_map, scaling)")
    s = sgd.scaling
    trained_bias = sgd.input_map.shape[0] > sgd.input_map.shape[1]  # input_map is N[:, k:]: k columns fewer

    def f64(values) -> torch.Tensor:
        return torch.tensor(np.asarray(values, dtype=np.float64))

    return {
        "format": FORMAT,
        "target": design.target,
        "features": list(design.names),
        "terms": list(design.term_names),
        "degree": design.degree,
        "intercept": design.intercept,
        "state_dict": _linear_state(sgd.params, design.intercept, torch.float64),
        "trained": _linear_state(sgd.trained, trained_bias, getattr(torch, sgd.dtype)),
        "weights": weights,
        "scaling": {"input_map": f64(sgd.input_map), "x_shift": f64(s.x_shift), "x_scale": f64(s.x_scale),
                    "y_shift": f64(s.y_shift), "y_scale": f64(s.y_scale), "precondition": sgd.precondition},
        "dtype": sgd.dtype,
        "optimizer": sgd.optimizer,
        "epochs": sgd.epochs,
    }


def sgd_model_bytes(design: Design, sgd: SGDResult, weights: str | None = None) -> bytes:
    """sgd_model.pt's bytes."""
    buffer = io.BytesIO()
    torch.save(sgd_model_doc(design, sgd, weights), buffer)
    return buffer.getvalue()


def load_sgd_model(path: Path, raw: bytes | None = None) -> dict:
    """The dict of an sgd_model.pt, read with weights_only=True (no object is unpickled), on the CPU.
    raw: the file's bytes, when the caller already read (and checked) them; path then names it."""
    try:
        state = torch.load(path if raw is None else io.BytesIO(raw), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserInputError(f"{path}: no such file (a version written before models were saved?)") from None
    except (OSError, EOFError, RuntimeError, pickle.UnpicklingError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserInputError(f"{path}: not a readable SGD model ({reason})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserInputError(f"{path}: not a {FORMAT} file")
    return state


def linear_from(state: dict, key: str = "state_dict") -> torch.nn.Linear:
    """The nn.Linear of state[key]: "state_dict" (default) on the original term values, in float64;
    "trained" the model as trained, in its dtype, on the training inputs (see the module docstring)."""
    tensors = state[key]
    weight = tensors["weight"]
    model = torch.nn.Linear(weight.shape[1], 1, bias="bias" in tensors, dtype=weight.dtype)
    model.load_state_dict(tensors)
    return model
