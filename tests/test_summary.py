"""The UI summary and the drift between versions (pure functions of the documents)."""

from __future__ import annotations

import pytest

from tasks.summary import drift, parameters, same_model, summary_markdown, table_rows


def _doc(b0: float, b1: float, sgd: tuple[float, float] = (0.0, 0.0)) -> dict:
    return {
        "target": "y", "terms": ["x"], "intercept": True,
        "exact": {"intercept": b0, "coefficients": [b1], "r_squared": 0.9, "adj_r_squared": 0.89,
                  "residual_std": 1.5, "condition_number": 9.5, "condition_number_scaled": 1.0,
                  "warnings": ["the design is ill-conditioned"]},
        "sgd": {"intercept": sgd[0], "coefficients": [sgd[1]], "optimizer": "sgd", "lr": 0.5,
                "epochs": 128, "stop_reason": "tol"},
    }


class _Comparison:
    converged = False
    summary = "SGD did not converge in 128 epochs"
    excess_mse = 0.25


def test_first_version_has_no_drift():
    """Without a previous version of the model, drift says so and changes nothing."""
    moved = drift(None, None, _doc(1.0, 2.0))
    assert moved == {"since": None, "changes": None, "max_abs_change": None, "max_rel_change": None}


def test_drift_is_the_change_of_each_exact_parameter():
    """Changes are new - old per parameter; the maxima are over absolute and relative changes."""
    moved = drift(_doc(1.0, 2.0), "v1", _doc(1.5, 1.0))
    assert moved["since"] == "v1"
    assert moved["changes"] == {"intercept": 0.5, "x": -1.0}
    assert moved["max_abs_change"] == 1.0
    assert moved["max_rel_change"] == pytest.approx(0.5)


def test_models_are_the_same_only_with_the_same_target_terms_and_intercept():
    """Drift compares like with like."""
    other = _doc(1.0, 2.0) | {"terms": ["x", "x^2"]}
    assert same_model(_doc(1.0, 2.0), _doc(3.0, 4.0))
    assert not same_model(_doc(1.0, 2.0), other)
    assert parameters(_doc(1.0, 2.0), "exact") == (["intercept", "x"], [1.0, 2.0])


def test_summary_shows_table_verdict_statistics_drift_images_and_files():
    """The markdown holds everything the UI must show."""
    doc = _doc(1.0, 2.0, sgd=(0.9, 2.1))
    moved = drift(_doc(1.0, 1.0), "v0", doc)
    text = summary_markdown(doc, _Comparison(), "/tmp/v1", moved, {"fit": "data:image/png;base64,AAAA"},
                            ["coefficients.json", "fit.png"])
    assert "| intercept | 1 | 0.9 |" in text and "| x | 2 | 2.1 |" in text
    assert "not converged" in text and "R² **0.9**" in text and "condition number 9.5" in text
    assert "drift since `v0`" in text and "![fit](data:image/png;base64,AAAA)" in text
    assert "**warning:** the design is ill-conditioned" in text
    assert "[fit.png](file:///tmp/v1/fit.png)" in text


def test_table_rows_carry_version_parameter_values_and_change():
    """One row per parameter, for the artifact history."""
    doc = _doc(1.0, 2.0, sgd=(0.9, 2.1))
    rows = table_rows(doc, _Comparison(), "v1", drift(_doc(1.0, 1.0), "v0", doc))
    assert rows == [
        {"version": "v1", "parameter": "intercept", "exact": 1.0, "sgd": 0.9, "change_since_previous": 0.0,
         "converged": False},
        {"version": "v1", "parameter": "x", "exact": 2.0, "sgd": 2.1, "change_since_previous": 1.0,
         "converged": False},
    ]
