"""Every outcome of training writes valid documents: converged, stalled, diverged, timed out, one
epoch or none, any rtol, a perfect fit. A quantity that does not exist is null with its reason
beside it (K_reason), never NaN or Infinity, and every reader (UI summary, table, show) takes it."""

from __future__ import annotations

import json
import math
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from flows.commands.show import summary_text
from tasks.evaluate.compare import compare_fits
from tasks.exact.fit import fit_exact
from tasks.publish.documents import coefficients_doc, comparison_doc
from tasks.publish.markdown import summary_markdown, table_rows
from tasks.publish.reader import nulled
from tasks.publish.schema import Coefficients, Manifest
from tasks.publish.writer import dumps, write_version
from tasks.training.train import SGDResult
from tests.helpers import TUTORIAL_X, make_design, strict_loads, tutorial_design

pytestmark = pytest.mark.numeric  # run again under torch's other CPU kernels (make test)

NUMBERS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, 1e308, -1e308]))
STOPS = st.sampled_from(["tol", "epochs", "diverged", "timeout"])
# The tutorial's ten points, and a line they lie on exactly (residual sum of squares 0).
DESIGNS = {"tutorial": tutorial_design(), "perfect": make_design(TUTORIAL_X * 4, TUTORIAL_X * 8 + 1),
           "no-intercept": tutorial_design(intercept=False)}
FITS = {name: fit_exact(design) for name, design in DESIGNS.items()}


def check_nulled(raw: object, out: object, reasons: dict, key: str = "") -> bool:
    """out is raw with each non-finite float as None and everything else equal; returns whether raw
    held a non-finite number. Every dict key holding one has a reason beside it in `reasons` (the
    dict that holds the key), or its parent has one when the dict is an {intercept, coefficients} pair."""
    if isinstance(raw, dict):
        assert isinstance(out, dict)
        found = False
        pair = set(raw) <= {"intercept", "coefficients"}
        for k, v in raw.items():
            if check_nulled(v, out[k], out, k):
                found = True
                if not pair:
                    assert isinstance(out.get(f"{k}_reason"), str) and out[f"{k}_reason"], k
        assert set(out) - set(raw) <= {f"{k}_reason" for k in raw}
        return found and pair
    if isinstance(raw, (list, tuple)):
        assert isinstance(out, list) and len(out) == len(raw)
        return any([check_nulled(a, b, reasons, key) for a, b in zip(raw, out)])
    if isinstance(raw, float) and not math.isfinite(raw):
        assert out is None, key
        return True
    assert out == raw, key
    return False


def _sgd(params, stop_reason: str, epochs: int, losses, intercept: bool, final_loss: float) -> SGDResult:
    return SGDResult(intercept=params[0] if intercept else None, coefficients=tuple(params[int(intercept):]),
                     epochs=epochs, final_loss=final_loss, stop_reason=stop_reason, optimizer="sgd", lr=0.1,
                     momentum=None, losses=np.asarray(losses, dtype=np.float64), device="cpu", dtype="float64",
                     time_limit=1.0 if stop_reason == "timeout" else None, distance=None)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(design=st.sampled_from(sorted(DESIGNS)), params=st.lists(NUMBERS, min_size=2, max_size=2),
       stop=STOPS, losses=st.lists(NUMBERS, max_size=30), final_loss=NUMBERS,
       rtol=st.floats(1e-300, 1.0))
@example(design="tutorial", params=[math.nan, math.inf], stop="diverged", losses=[1.0, math.inf], final_loss=math.nan,
         rtol=1e-6)
@example(design="tutorial", params=[1.0, 9.0], stop="epochs", losses=[3.0] * 30, final_loss=3.0, rtol=1e-10)
@example(design="perfect", params=[1.0, 2.0], stop="tol", losses=[], final_loss=0.0, rtol=1e-6)
def test_every_outcome_gives_strict_json_with_a_reason_beside_each_null(tmp_path, design, params, stop, losses,
                                                                        final_loss, rtol):
    """Whatever training returned, the documents are strict JSON; a non-finite figure is null with its
    reason beside it; the summary, the table rows and `show` read them; the version is written."""
    d, exact = DESIGNS[design], FITS[design]
    params = params[: d.n_params]
    sgd = _sgd(params, stop, len(losses), losses, d.intercept, final_loss)
    comparison = compare_fits(d, exact, sgd, rtol)
    coef, comp = coefficients_doc(d, exact, sgd, comparison), comparison_doc(comparison)
    with mock.patch("tasks.publish.documents.nulled", lambda doc, reasons=None: doc):
        raw_coef, raw_comp = coefficients_doc(d, exact, sgd, comparison), comparison_doc(comparison)
    for raw, doc in ((raw_coef, coef), (raw_comp, comp)):
        assert strict_loads(dumps(doc)) == doc  # the builders already wrote plain, finite-or-null values
        check_nulled(raw, doc, doc)
    raw = {"max_abs_diff": comparison.max_abs_diff, "max_rel_diff": comparison.max_rel_diff,
           "sgd_mse": comparison.sgd_mse, "excess_mse": comparison.excess_mse, "distance": comparison.distance,
           "relative_distance": comparison.relative_distance,
           "epochs_needed_estimate": comparison.epochs_needed_estimate}
    for key, value in raw.items():
        if value is not None and not math.isfinite(value):
            assert comp[key] is None and comp[f"{key}_reason"], key
        else:
            assert comp[key] == value
    if comp["epochs_needed_estimate"] is None:
        assert comp["epochs_needed_estimate_reason"]
    if not all(map(math.isfinite, params)):
        assert coef["sgd"].get("coefficients_reason") or coef["sgd"].get("intercept_reason")
    if design == "perfect" and exact.rss == 0:
        assert "perfect" in coef["exact"]["t_values_reason"]
    path, written = write_version(tmp_path / "artifacts", "ab" * 32, {"comparison.json": dumps(comp)},
                                  Coefficients.from_json(coef), Manifest.from_json({"data": {}}))
    assert strict_loads((path / "coefficients.json").read_bytes()) == written.to_json()
    summary_markdown(written, comparison, str(path), written.drift, {}, ["coefficients.json"])
    json.dumps(table_rows(written, comparison, path.name, written.drift), allow_nan=False)
    assert "verdict" in summary_text(path)


def test_nulled_keeps_the_parameter_pair_shape_and_the_builders_reason():
    """{"intercept", "coefficients"} keeps its two keys (the reason goes beside the pair); a reason
    the builder wrote is kept; finite values are untouched."""
    doc = {"t_values": {"intercept": math.inf, "coefficients": [1.5, -math.inf]}, "a": math.nan,
           "a_reason": "given", "b": 2.0, "c": {"d": [math.inf]}}
    out = nulled(doc, {"t_values": "perfect fit", "c": "why"})
    assert out["t_values"] == {"intercept": None, "coefficients": [1.5, None]}
    assert out["t_values_reason"].startswith("perfect fit")
    assert out["a"] is None and out["a_reason"] == "given"
    assert out["b"] == 2.0 and "b_reason" not in out
    assert out["c"] == {"d": [None], "d_reason": "why (the computed value was +inf)"}


def test_the_estimate_of_epochs_needed_is_null_with_its_reason_when_the_loss_is_flat():
    """The defect of the issue: a flat loss gave epochs_needed_estimate = inf and a failed write."""
    design, exact = DESIGNS["tutorial"], FITS["tutorial"]
    sgd = _sgd([1.0, 9.0], "epochs", 50, [3.0] * 50, True, 3.0)
    comp = strict_loads(dumps(comparison_doc(compare_fits(design, exact, sgd, 1e-6))))
    assert comp["epochs_needed_estimate"] is None
    assert comp["epochs_needed_estimate_reason"].startswith("the loss is no longer falling: no rate to extrapolate")
