"""The geometry from the Gram sums of the ingest pass (tasks/kernels/gram.py): the same geometry as
TSQR's where it is taken, no TSQR pass then, and TSQR wherever the Gram would lose accuracy."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tasks.config import ModelSpec
from tasks.exact.fit import fit_exact
from tasks.ingest.prepare import prepare_data
from tasks.kernels.design import Design
from tasks.kernels.gram import GramSums, gram_geometry
from tasks.kernels.tsqr import design_geometry


def _design(x: np.ndarray, y: np.ndarray, intercept: bool = True) -> tuple[Design, GramSums]:
    design = Design.from_arrays(x, y, tuple(f"x{j}" for j in range(x.shape[1])), intercept=intercept, block_rows=777)
    gram = GramSums(1 + x.shape[1])
    for block in design.table.blocks():
        gram.update(block)
    return design, gram


@pytest.mark.parametrize("intercept", [True, False])
def test_the_gram_geometry_is_tsqrs_where_it_is_taken(intercept):
    """R^T R (W^T W), R^T qty (W^T y) and the float64 solution agree with TSQR's to about 1e-13."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(20000, 5)) * [1, 2, 3, 4, 5] + [0, 1, 2, 3, 4]
    y = x @ [1.0, -2.0, 0.5, 0.0, 3.0] + 7 + rng.normal(size=20000)
    design, gram = _design(x, y, intercept)
    fast, tsqr = gram_geometry(design, gram), design_geometry(design)
    assert fast is not None
    np.testing.assert_allclose(fast.R.T @ fast.R, tsqr.R.T @ tsqr.R, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(fast.R.T @ fast.qty, tsqr.R.T @ tsqr.qty, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(fast.initial_solution(), tsqr.initial_solution(), rtol=1e-11)
    # the certified fit is the same from either start (both converge to the float64 rounding of the
    # exact solution), and so are its standard errors
    a, b = fit_exact(design, fast), fit_exact(design, tsqr)
    np.testing.assert_array_equal(a.params, b.params)
    np.testing.assert_allclose(a.se_coefficients, b.se_coefficients, rtol=1e-12)


@pytest.mark.parametrize("case", ["offset", "collinear", "constant-free"])
def test_tsqr_decides_where_the_gram_would_lose_accuracy(case):
    """A column whose mean is far beyond its spread (the centring would cancel), or a nearly
    collinear design (forming W^T W squares its conditioning): no Gram geometry."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(5000, 2))
    if case == "offset":
        x[:, 0] += 1e6
    elif case == "collinear":
        x[:, 1] = x[:, 0] + 1e-5 * rng.normal(size=5000)
    y = x.sum(axis=1) + rng.normal(size=5000)
    design, gram = _design(x, y, intercept=case != "constant-free")
    if case == "constant-free":  # a well-conditioned design: taken, as a control
        assert gram_geometry(design, gram) is not None
    else:
        assert gram_geometry(design, gram) is None


def _csv(tmp_path, df: pd.DataFrame):
    path = tmp_path / "t.csv"
    df.to_csv(path, index=False)
    return path


def test_a_well_conditioned_table_is_ingested_without_a_tsqr_pass(tmp_path, monkeypatch):
    """The ingest pass's Gram sums give the geometry: no pass over the stored file is made for it."""
    import tasks.ingest.validate as validate

    def no_tsqr(*args, **kwargs):
        raise AssertionError("a TSQR pass was made")

    rng = np.random.default_rng(3)
    df = pd.DataFrame({"x1": rng.normal(size=3000), "x2": rng.uniform(0, 5, 3000)})
    df["y"] = 1 + 2 * df.x1 - df.x2 + rng.normal(size=3000)
    monkeypatch.setattr(validate, "design_geometry", no_tsqr)
    prepared = prepare_data(ModelSpec(), _csv(tmp_path, df), tmp_path / "data", block_rows=500)
    fit = fit_exact(prepared.design(ModelSpec()), prepared.geometry)
    ref = np.linalg.lstsq(np.column_stack([np.ones(3000), df[["x1", "x2"]]]), df.y, rcond=None)[0]
    np.testing.assert_allclose(fit.params, ref, rtol=1e-12)
    # an offset column (1e6 + x) goes through TSQR
    df["x2"] += 1e6
    with pytest.raises(AssertionError, match="TSQR pass"):
        prepare_data(ModelSpec(), _csv(tmp_path, df), tmp_path / "data2", block_rows=500)
