"""sgd_model.pt and design.json in real version folders, and coefficients.json's cov_params.

Five in-process flow runs (module-scoped) on small designs cover the training coordinates:
standardized, --no-standardize, --precondition (a cubic: Chebyshev basis), no intercept in float32,
and a quadratic without intercept (powers basis). Every figure is checked against numpy on the
CSV the run read, statsmodels OLS and hashlib, never against the code that wrote it.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickletools
import zipfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
import torch

from tasks.errors import UserInputError
from tasks.kernels.design import ScaledBasis
from tasks.training.model_file import FORMAT, linear_from, load_sgd_model

# What a pickle of tensors may name: torch's tensor rebuild, its storages and the OrderedDict of a
# tensor's metadata. Any other GLOBAL would be an object unpickled on load.
TENSOR_GLOBALS = {"torch._utils _rebuild_tensor_v2", "torch DoubleStorage", "torch FloatStorage",
                  "collections OrderedDict"}


@dataclass(frozen=True)
class Run:
    path: Path
    frame: pd.DataFrame
    features: tuple[str, ...]
    degree: int
    intercept: bool
    train: dict

    def terms(self) -> np.ndarray:
        x = self.frame[list(self.features)].to_numpy()
        return x if self.degree == 1 else np.column_stack([x[:, 0] ** k for k in range(1, self.degree + 1)])

    def X(self) -> np.ndarray:
        t = self.terms()
        return np.column_stack([np.ones(len(t)), t]) if self.intercept else t

    @property
    def y(self) -> np.ndarray:
        return self.frame["y"].to_numpy()

    def coefficients(self) -> dict:
        return json.loads((self.path / "coefficients.json").read_text())

    def params(self, block: str) -> np.ndarray:
        doc = self.coefficients()[block]
        return np.array(([doc["intercept"]] if self.intercept else []) + doc["coefficients"])


def random_frame(rng: np.random.Generator, n: int = 40) -> pd.DataFrame:
    """Three features on different scales and offsets; values with 6 decimals, exact through CSV text."""
    x = np.round(rng.normal(size=(n, 3)) * [1.0, 3.0, 20.0] + [0.0, 10.0, 100.0], 6)
    y = np.round(x @ [1.5, -2.0, 0.25] + 4.0 + rng.normal(size=n), 6)
    return pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "y": y})


def curve_frame(rng: np.random.Generator, n: int = 30) -> pd.DataFrame:
    x = np.round(rng.uniform(1.0, 3.0, size=n), 6)
    return pd.DataFrame({"x": x, "y": np.round(1 - 2 * x + 0.5 * x**3 + 0.1 * rng.normal(size=n), 6)})


PLAN = {  # name -> (data, features, degree, intercept, training options)
    "standardized": ("random", ("a", "b", "c"), 1, True, {}),
    "raw": ("random", ("a", "b", "c"), 1, True, {"standardize": False}),
    "cubic": ("curve", ("x",), 3, True, {"precondition": True}),
    "origin32": ("random", ("a", "b", "c"), 1, False, {"dtype": "float32"}),
    "quadratic0": ("curve", ("x",), 2, False, {"precondition": True}),
}


@pytest.fixture(scope="module")
def runs(prefect_harness, tmp_path_factory) -> dict[str, Run]:
    from flows.regression import regression_flow
    from tasks.config import ModelSpec, RunConfig, TrainConfig

    root = tmp_path_factory.mktemp("sgd-model")
    rng = np.random.default_rng(9)
    frames = {"random": random_frame(rng), "curve": curve_frame(rng)}
    for name, frame in frames.items():
        frame.to_csv(root / f"{name}.csv", index=False)
    out = {}
    for name, (data, features, degree, intercept, train) in PLAN.items():
        config = RunConfig(data=root / f"{data}.csv", artifacts_dir=root / "artifacts", data_dir=root / "data",
                           model=ModelSpec(features=features, degree=degree, intercept=intercept),
                           train=TrainConfig(device="cpu", epochs=3000, **train))
        state = regression_flow(config=config, return_state=True)
        assert state.is_completed(), f"{name}: flow run ended in {state!r}"
        frame = pd.read_csv(root / f"{data}.csv")
        out[name] = Run(Path(state.result()), frame, features, degree, intercept, train)
    return out


def assert_close(actual: np.ndarray, expected: np.ndarray, rel: float) -> None:
    """Agreement to rel relative to the largest |expected| (entries near zero cancel)."""
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape
    err = float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))
    assert err <= rel, f"relative error {err:.3g} > {rel:.3g}"


@pytest.mark.parametrize("name", list(PLAN))
def test_the_model_file_loads_with_weights_only_and_names_the_model(runs, name):
    """torch.load(weights_only=True) reads it; the metadata match the run and coefficients.json."""
    run = runs[name]
    state = torch.load(run.path / "sgd_model.pt", weights_only=True)
    sgd = run.coefficients()["sgd"]
    assert state["format"] == FORMAT
    assert (state["target"], state["features"], state["degree"], state["intercept"]) == \
        ("y", list(run.features), run.degree, run.intercept)
    assert state["terms"] == run.coefficients()["terms"]
    assert (state["dtype"], state["optimizer"], state["epochs"]) == (sgd["dtype"], sgd["optimizer"], sgd["epochs"])
    assert state["dtype"] == run.train.get("dtype", "float64")
    q = run.terms().shape[1]
    for key, dtype in (("state_dict", torch.float64), ("trained", getattr(torch, state["dtype"]))):
        tensors = state[key]
        assert set(tensors) == ({"weight", "bias"} if run.intercept else {"weight"}), key
        assert tensors["weight"].shape == (1, q) and tensors["weight"].dtype == dtype, key
        if run.intercept:
            assert tensors["bias"].shape == (1,) and tensors["bias"].dtype == dtype, key
    s = state["scaling"]
    assert s["input_map"].shape == (q + run.intercept, q) and s["input_map"].dtype == torch.float64
    assert s["x_shift"].shape == s["x_scale"].shape == (q,)
    assert s["y_shift"].shape == s["y_scale"].shape == ()
    assert s["precondition"] is bool(run.train.get("precondition", False))


@pytest.mark.parametrize("name", list(PLAN))
def test_the_rebuilt_linear_holds_the_sgd_coefficients_exactly(runs, name):
    """nn.Linear from "state_dict": its numbers ARE coefficients.json sgd, its forward on the terms is X @ sgd."""
    run = runs[name]
    model = linear_from(load_sgd_model(run.path / "sgd_model.pt"))
    assert isinstance(model, torch.nn.Linear) and model.weight.dtype == torch.float64
    sgd = run.coefficients()["sgd"]
    assert model.weight.detach()[0].tolist() == sgd["coefficients"]
    assert (model.bias is None) if not run.intercept else (model.bias.detach().tolist() == [sgd["intercept"]])
    with torch.no_grad():
        forward = model(torch.from_numpy(run.terms())).numpy()[:, 0]
    assert_close(forward, run.X() @ run.params("sgd"), 1e-14)


@pytest.mark.parametrize("name", list(PLAN))
def test_the_trained_model_and_its_scaling_reproduce_the_sgd_predictions(runs, name):
    """y_shift + y_scale * trained(a), a = [1, terms] @ input_map: the SGD line to 1e-10. The trained
    weights are evaluated in float64 (float32 values are exact there): the map back is exact."""
    run = runs[name]
    state = load_sgd_model(run.path / "sgd_model.pt")
    s = state["scaling"]
    trained = linear_from(state, "trained").double()
    a = torch.from_numpy(run.X()) @ s["input_map"]
    with torch.no_grad():
        prediction = (s["y_shift"] + s["y_scale"] * trained(a)[:, 0]).numpy()
    assert_close(prediction, run.X() @ run.params("sgd"), 1e-10)


def test_the_scaling_is_the_standardization_of_the_data(runs):
    """Standardized: population mean and standard deviation of the terms and of y, input_map the
    map to (x - mean) / std; --no-standardize: zeros and ones, input_map the identity; without an
    intercept nothing is shifted and the scale is the root mean square."""
    run = runs["standardized"]
    s = load_sgd_model(run.path / "sgd_model.pt")["scaling"]
    t = run.terms()
    mean, std = t.mean(axis=0), t.std(axis=0)
    np.testing.assert_allclose(s["x_shift"].numpy(), mean, rtol=1e-13)
    np.testing.assert_allclose(s["x_scale"].numpy(), std, rtol=1e-12)
    assert float(s["y_shift"]) == pytest.approx(run.y.mean(), rel=1e-13)
    assert float(s["y_scale"]) == pytest.approx(run.y.std(), rel=1e-12)
    np.testing.assert_allclose(s["input_map"].numpy(), np.vstack([-mean / std, np.diag(1 / std)]), rtol=1e-12, atol=0)

    s = load_sgd_model(runs["raw"].path / "sgd_model.pt")["scaling"]
    assert s["x_shift"].tolist() == [0.0] * 3 and s["x_scale"].tolist() == [1.0] * 3
    assert (float(s["y_shift"]), float(s["y_scale"])) == (0.0, 1.0)
    assert s["input_map"].tolist() == np.vstack([np.zeros(3), np.eye(3)]).tolist()

    run = runs["origin32"]
    s = load_sgd_model(run.path / "sgd_model.pt")["scaling"]
    rms = np.sqrt((run.terms() ** 2).mean(axis=0))
    assert s["x_shift"].tolist() == [0.0] * 3 and float(s["y_shift"]) == 0.0
    np.testing.assert_allclose(s["x_scale"].numpy(), rms, rtol=1e-12)
    assert float(s["y_scale"]) == pytest.approx(np.sqrt((run.y**2).mean()), rel=1e-12)


def test_the_model_file_pickles_nothing_but_tensors(runs):
    """The pickle inside the archive names only torch's tensor rebuild and storages: loading it
    builds no object of any other class (what weights_only=True enforces on load)."""
    raw = (runs["cubic"].path / "sgd_model.pt").read_bytes()
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        pickle = archive.read(next(n for n in archive.namelist() if n.endswith("/data.pkl")))
    named = {arg for op, arg, _ in pickletools.genops(pickle) if "GLOBAL" in op.name}
    assert named and named <= TENSOR_GLOBALS, named - TENSOR_GLOBALS


def test_loading_refuses_a_file_that_would_unpickle_an_object(tmp_path):
    """A .pt holding a Python object (here a Fraction), an unreadable file or another format: one
    UserInputError naming the file, nothing unpickled."""
    evil = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "state_dict": {"weight": Fraction(1, 3)}}, evil)
    with pytest.raises(UserInputError, match="evil.pt"):
        load_sgd_model(evil)
    (tmp_path / "junk.pt").write_bytes(b"not a zip archive")
    with pytest.raises(UserInputError, match="junk.pt"):
        load_sgd_model(tmp_path / "junk.pt")
    torch.save({"format": "something/else", "weight": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(UserInputError, match="other.pt"):
        load_sgd_model(tmp_path / "other.pt")
    with pytest.raises(UserInputError, match="missing.pt"):
        load_sgd_model(tmp_path / "missing.pt")


@pytest.mark.parametrize("name", list(PLAN))
def test_both_new_files_are_in_the_manifest_with_their_sha256(runs, name):
    path = runs[name].path
    files = json.loads((path / "manifest.json").read_text())["files"]
    for file in ("sgd_model.pt", "design.json"):
        assert files[file] == hashlib.sha256((path / file).read_bytes()).hexdigest(), file


@pytest.mark.parametrize("name, kind", [("standardized", "columns"), ("origin32", "columns"),
                                        ("cubic", "chebyshev"), ("quadratic0", "powers")])
def test_design_json_reproduces_the_exact_fit_in_its_basis(runs, name, kind):
    """W c = X beta (statsmodels' fitted values) with W rebuilt from the basis fields alone, and
    R^T R = W^T W; the fields name the model and the fitted range."""
    run = runs[name]
    doc = json.loads((run.path / "design.json").read_text())
    assert doc["format"] == "linreg-flow/design/1"
    assert (doc["target"], doc["features"], doc["terms"], doc["degree"], doc["intercept"], doc["rows"]) == \
        ("y", list(run.features), run.coefficients()["terms"], run.degree, run.intercept, len(run.frame))
    x = run.frame[list(run.features)].to_numpy()
    assert doc["feature_min"] == x.min(axis=0).tolist() and doc["feature_max"] == x.max(axis=0).tolist()
    b = doc["basis"]
    assert b["kind"] == kind
    W = ScaledBasis(b["kind"], np.array(b["shift"]), np.array(b["scale"]), b["ones"], b["degree"], ()).apply(x)
    c = np.array(doc["basis_coefficients"])
    X, p = run.X(), run.X().shape[1]
    assert W.shape == (len(x), p) and c.shape == (p,)
    assert_close(W @ c, X @ run.params("exact"), 1e-13)
    assert_close(W @ c, sm.OLS(run.y, X).fit().fittedvalues, 1e-10)
    R = np.array(doc["r_factor"])
    assert R.shape == (p, p) and np.all(np.tril(R, -1) == 0)
    assert_close(R.T @ R, W.T @ W, 1e-13)


@pytest.mark.parametrize("name", ["standardized", "origin32", "cubic"])
def test_cov_params_is_statsmodels_and_its_diagonal_the_squared_std_errors(runs, name):
    """coefficients.json exact.cov_params: statsmodels OLS cov_params() to 1e-10, entry by entry,
    symmetric, and sqrt of its diagonal are the std_errors."""
    run = runs[name]
    exact = run.coefficients()["exact"]
    cov = np.array(exact["cov_params"])
    np.testing.assert_allclose(cov, sm.OLS(run.y, run.X()).fit().cov_params(), rtol=1e-10, atol=0)
    assert np.array_equal(cov, cov.T)
    se = exact["std_errors"]
    expected = ([se["intercept"]] if run.intercept else []) + se["coefficients"]
    np.testing.assert_allclose(np.sqrt(np.diag(cov)), expected, rtol=1e-14)
