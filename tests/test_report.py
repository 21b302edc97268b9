"""The documents of a version: JSON-safe values and the contract's coefficients.json fields."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tasks.config import TrainConfig
from tasks.evaluate.compare import compare_fits
from tasks.exact.fit import fit_exact
from tasks.publish.documents import coefficients_doc, comparison_doc
from tasks.publish.reader import jsonable
from tasks.training.train import train_sgd
from tests.helpers import TUTORIAL_B0, tutorial_design


@pytest.mark.parametrize(
    "value", [math.nan, math.inf, -math.inf, np.float64("nan"), np.float32("inf"), np.float64("-inf")]
)
def test_jsonable_turns_non_finite_floats_into_none(value):
    """JSON has no NaN or Infinity: they become null."""
    assert jsonable(value) is None


def test_jsonable_converts_nested_numpy_values():
    """Nested dicts, lists, tuples and arrays become plain JSON values; finite floats are kept exactly."""
    doc = {
        "a": np.float64(0.1),
        "b": [np.int64(3), np.bool_(True), np.array([1.5, np.nan])],
        "c": (np.float32(2.5), {"d": math.inf}),
        "e": None,
        "f": "text",
        7: 1,
    }
    out = jsonable(doc)
    assert out == {"a": 0.1, "b": [3, True, [1.5, None]], "c": [2.5, {"d": None}], "e": None, "f": "text", "7": 1}
    assert type(out["a"]) is float and type(out["b"][0]) is int and type(out["b"][1]) is bool
    json.dumps(out, allow_nan=False)


def _doc(intercept: bool) -> dict:
    design = tutorial_design(intercept=intercept)
    exact = fit_exact(design)
    sgd = train_sgd(design, TrainConfig(device="cpu"))
    return coefficients_doc(design, exact, sgd, compare_fits(design, exact, sgd, rtol=1e-6))


@pytest.mark.parametrize("intercept", [True, False])
def test_coefficients_doc_has_every_contract_field(intercept):
    """coefficients.json holds every field the contract lists, with the contract's types."""
    doc = _doc(intercept)
    assert {"target", "terms", "intercept", "exact", "sgd"} <= doc.keys()
    assert doc["target"] == "y" and doc["terms"] == ["x"] and doc["intercept"] is intercept
    exact, sgd = doc["exact"], doc["sgd"]
    assert {"intercept", "coefficients", "std_errors", "r_squared", "residual_std", "condition_number"} <= exact.keys()
    assert {"intercept", "coefficients"} <= exact["std_errors"].keys()
    assert {"intercept", "coefficients", "epochs", "final_loss", "converged", "optimizer", "lr"} <= sgd.keys()
    assert len(exact["coefficients"]) == len(sgd["coefficients"]) == len(exact["std_errors"]["coefficients"]) == 1
    assert isinstance(sgd["epochs"], int) and isinstance(sgd["converged"], bool)
    assert sgd["optimizer"] == "sgd" and sgd["precondition"] is False
    assert sgd["converged"] is True
    if intercept:
        assert exact["intercept"] == pytest.approx(TUTORIAL_B0, rel=1e-12)
        assert isinstance(exact["std_errors"]["intercept"], float)
    else:
        # With --no-intercept both intercept values (and the intercept's standard error) are null.
        assert exact["intercept"] is None and sgd["intercept"] is None
        assert exact["std_errors"]["intercept"] is None


def test_coefficients_doc_round_trips_through_json_with_full_precision():
    """Written as JSON and read back, every number is the same float64."""
    doc = jsonable(_doc(True))
    back = json.loads(json.dumps(doc, allow_nan=False))
    assert back == doc
    assert back["exact"]["coefficients"][0] == doc["exact"]["coefficients"][0]


def test_comparison_doc_holds_every_comparison_field_as_json():
    """comparison.json: the contract's fields and the remedies, as plain JSON values."""
    design = tutorial_design()
    exact = fit_exact(design)
    sgd = train_sgd(design, TrainConfig(device="cpu", epochs=3, lr=1e-6))  # far from done: out of epochs
    comparison = compare_fits(design, exact, sgd, rtol=1e-6)
    doc = jsonable(comparison_doc(comparison))
    assert {"max_abs_diff", "max_rel_diff", "exact_mse", "sgd_mse", "excess_mse", "converged"} <= doc.keys()
    assert doc["converged"] is False and doc["remedies"] == ["more --epochs", "--precondition", "--optimizer lbfgs"]
    assert doc["sgd_mse"] == comparison.sgd_mse and doc["excess_mse"] == comparison.sgd_mse - comparison.exact_mse
    assert json.loads(json.dumps(doc, allow_nan=False)) == doc
