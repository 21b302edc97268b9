"""Weighted least squares (--weights COL): statsmodels' WLS on the same rows (formulas, categoricals,
transforms, missing cells, each cov_type), the weighted total sum of squares, likelihood and
k_constant, SGD on the same weighted MSE, bad weights refused by row, and the whole CLI path (run,
show, predict, sgd_model.pt)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import statsmodels.formula.api as smf
import torch

from tasks.config import ModelSpec, TrainConfig
from tasks.errors import UserInputError
from tasks.exact.fit import fit_exact
from tasks.exact.inference import infer
from tasks.ingest.prepare import Prepared, prepare_data
from tests.test_cli import cli_env, linreg, version_from_stdout  # noqa: F401 - cli_env is a fixture
from tests.test_formula import _table, _write


def _weighted(n: int = 400, seed: int = 3) -> pd.DataFrame:
    """test_formula's table (text and numeric categoricals, missing cells) with weights spread over
    two decades, a noise whose variance is 1/w (WLS's model), a blank weight and a cluster column."""
    df = _table(n, seed)
    rng = np.random.default_rng(seed + 100)
    df["w"] = np.round(rng.uniform(0.1, 10, n), 4)
    df["y"] = np.round(df["y"] + rng.normal(0, 1, n) / np.sqrt(df["w"]), 4)
    df.loc[123, "w"] = np.nan
    df["firm"] = rng.integers(0, 19, n)
    return df


def _wls(formula: str, df: pd.DataFrame, cov_type: str = "nonrobust"):
    """statsmodels' WLS with missing='drop' (rows with a blank weight go too), as the oracle."""
    kept = df.dropna(subset=["w"])
    model = smf.wls(formula, kept, weights=kept["w"], missing="drop")
    if cov_type == "cluster":
        rows = model.data.row_labels
        return model.fit(cov_type="cluster", cov_kwds={"groups": kept.loc[rows, "firm"].to_numpy()})
    return model.fit(cov_type=cov_type)


FORMULAS = [
    "y ~ x + z + C(store) + C(year) + x:z + np.log(x)",
    "y ~ store * x + I(x ** 2)",
    "y ~ x + C(store) - 1",  # no intercept, but every level of store: statsmodels' implicit constant
    "y ~ x + z - 1",
]


def _prepared(df: pd.DataFrame, folder: Path, formula: str, fmt: str = "csv", cluster: bool = False) -> Prepared:
    spec = ModelSpec(formula=formula, weights="w", missing="drop")
    prepared = prepare_data(spec, _write(df, folder, fmt), folder / "data", block_rows=37,
                            extra={"firm": "--cov cluster:firm"} if cluster else None)
    return Prepared.from_json(prepared.to_json())  # what the flow gets from the CLI's pass


@pytest.mark.numeric
@pytest.mark.parametrize("fmt", ["csv", "parquet"])
@pytest.mark.parametrize("formula", FORMULAS)
def test_the_fit_is_statsmodels_wls_on_the_same_rows(tmp_path, formula, fmt):
    """Parameters to 1e-10; standard errors, p-values, R^2 (weighted, centered where the raw columns
    span 1), F, log-likelihood (with 1/2 sum log w) and the condition number of the whitened design
    to 1e-8; rows with a blank in a model column or the weights left out as missing='drop' does."""
    df = _weighted()
    prepared = _prepared(df, tmp_path, formula, fmt)
    spec = ModelSpec(formula=formula, weights="w", missing="drop")
    fit = fit_exact(prepared.fitted(spec), prepared.geometry)
    ref = _wls(formula, df)
    stats = infer(fit, prepared.rows, 0.05)
    assert prepared.rows == ref.nobs and prepared.dropped == len(df) - ref.nobs
    np.testing.assert_allclose(fit.params, ref.params.to_numpy(), rtol=1e-10, atol=0)
    se = ([fit.se_intercept] if fit.intercept is not None else []) + list(fit.se_coefficients)
    np.testing.assert_allclose(se, ref.bse.to_numpy(), rtol=1e-8)
    np.testing.assert_allclose(stats.p_values, ref.pvalues.to_numpy(), rtol=1e-8, atol=1e-300)
    assert fit.k_constant == ref.k_constant
    assert fit.r_squared == pytest.approx(ref.rsquared, rel=1e-8)
    assert fit.adj_r_squared == pytest.approx(ref.rsquared_adj, rel=1e-8)
    assert fit.rss == pytest.approx(ref.ssr, rel=1e-10)
    assert stats.f_statistic == pytest.approx(ref.fvalue, rel=1e-8)
    assert stats.log_likelihood == pytest.approx(ref.llf, rel=1e-10)
    assert stats.aic == pytest.approx(ref.aic, rel=1e-10) and stats.bic == pytest.approx(ref.bic, rel=1e-10)
    assert fit.condition_number == pytest.approx(ref.condition_number, rel=1e-8)


@pytest.mark.numeric
@pytest.mark.parametrize("cov_type", ["HC0", "HC1", "HC2", "HC3", "cluster"])
def test_robust_covariances_of_a_weighted_fit_are_statsmodels(tmp_path, cov_type):
    """statsmodels' WLS robust covariances are those of the whitened rows (leverages of s X for HC2
    and HC3, scores s e for the clusters): standard errors and p-values to 1e-8, the Wald F too."""
    df, formula = _weighted(), FORMULAS[0]
    prepared = _prepared(df, tmp_path, formula, "parquet", cluster=cov_type == "cluster")
    fitted = prepared.fitted(ModelSpec(formula=formula, weights="w", missing="drop"))
    fit = fit_exact(fitted, prepared.geometry, cov_type=cov_type, cluster="firm" if cov_type == "cluster" else None)
    stats = infer(fit, prepared.rows, 0.05)
    ref = _wls(formula, df, cov_type)
    np.testing.assert_allclose([fit.se_intercept, *fit.se_coefficients], ref.bse.to_numpy(), rtol=1e-8)
    np.testing.assert_allclose(stats.p_values, ref.pvalues.to_numpy(), rtol=1e-8, atol=1e-300)
    assert stats.f_statistic == pytest.approx(float(np.squeeze(ref.fvalue)), rel=1e-8)


def test_weights_work_without_a_formula_and_stay_out_of_the_default_features(tmp_path):
    """--target with --weights: the weights column is no feature of its own (left out, named in the
    selection), and a polynomial's whitened powers fit as statsmodels' WLS of x + x^2 does."""
    df = _weighted().dropna()
    path = _write(df.drop(columns=["store"]), tmp_path, "csv")
    spec = ModelSpec(target="y", weights="w")
    prepared = prepare_data(spec, path, tmp_path / "data")
    assert prepared.columns == ("y", "x", "z", "year", "firm") and "'w' (used by --weights w)" in prepared.selection
    fit = fit_exact(prepared.fitted(spec), prepared.geometry)
    ref = smf.wls("y ~ x + z + year + firm", df, weights=df["w"]).fit()
    np.testing.assert_allclose(fit.params, ref.params.to_numpy(), rtol=1e-10)
    poly = ModelSpec(target="y", features=("x",), degree=2, weights="w")
    prepared = prepare_data(poly, path, tmp_path / "data")
    fit = fit_exact(prepared.fitted(poly), prepared.geometry)
    ref = smf.wls("y ~ x + I(x ** 2)", df, weights=df["w"]).fit()
    np.testing.assert_allclose(fit.params, ref.params.to_numpy(), rtol=1e-10)
    np.testing.assert_allclose([fit.se_intercept, *fit.se_coefficients], ref.bse.to_numpy(), rtol=1e-8)


@pytest.mark.numeric
def test_sgd_trains_on_the_weighted_mse_and_reaches_the_wls_fit(tmp_path):
    """The SGD side minimizes sum w (y - X b)^2 / n: it converges to statsmodels' WLS parameters (the
    verdict at its tolerance), and its final loss is WLS's ssr / n, not the unweighted fit's."""
    from tasks.evaluate.compare import compare_fits
    from tasks.training.train import train_sgd

    df, formula = _weighted(), "y ~ x + z + C(store)"
    prepared = _prepared(df, tmp_path, formula)
    fitted = prepared.fitted(ModelSpec(formula=formula, weights="w", missing="drop"))
    exact = fit_exact(fitted, prepared.geometry)
    sgd = train_sgd(fitted, TrainConfig(device="cpu", optimizer="lbfgs", epochs=500), prepared.geometry)
    comparison = compare_fits(fitted, exact, sgd, 1e-6)
    ref = _wls(formula, df)
    assert comparison.converged, comparison.summary
    assert sgd.intercept is not None and len(sgd.coefficients) == len(ref.params) - 1
    np.testing.assert_allclose(sgd.params, ref.params.to_numpy(), rtol=1e-6)
    assert comparison.exact_mse == pytest.approx(ref.ssr / ref.nobs, rel=1e-10)
    assert sgd.final_loss == pytest.approx(ref.ssr / ref.nobs, rel=1e-6)


def test_every_pass_of_a_weighted_fit_runs_part_by_part_through_pickle(tmp_path):
    """What --dask does: the whitened design's parts (each reads its own row groups and the weights
    beside them) go through pickle; fit, clustered errors and training match the one-piece answer."""
    import pickle

    from tasks.kernels.passes import Passes
    from tasks.training.train import train_sgd

    def pickling_map(fn, parts):
        return [pickle.loads(pickle.dumps(fn))(pickle.loads(pickle.dumps(part))) for part in parts]

    df, formula = _weighted(), FORMULAS[0]
    prepared = _prepared(df, tmp_path, formula, "parquet", cluster=True)
    fitted = prepared.fitted(ModelSpec(formula=formula, weights="w", missing="drop"))
    assert len(fitted.split(3)) == 3
    one = fit_exact(fitted, prepared.geometry, cov_type="cluster", cluster="firm")
    parts = fit_exact(fitted, prepared.geometry, Passes(pickling_map, 3), cov_type="cluster", cluster="firm")
    np.testing.assert_allclose(parts.params, one.params, rtol=1e-14)
    np.testing.assert_allclose(parts.se_coefficients, one.se_coefficients, rtol=1e-12)
    cfg = TrainConfig(device="cpu", epochs=50)
    np.testing.assert_allclose(train_sgd(fitted, cfg, prepared.geometry, passes=Passes(pickling_map, 3)).params,
                               train_sgd(fitted, cfg, prepared.geometry).params, rtol=1e-9)


@pytest.mark.parametrize(("change", "message"), [
    (lambda df: df.assign(w=df["w"].where(df.index != 8, 0.0)),
     r"column 'w', row 9 \(line 10\): weight 0.0 is not > 0"),
    (lambda df: df.assign(w=df["w"].where(df.index != 30, -2.5)), r"row 31 \(line 32\): weight -2.5 is not > 0"),
    (lambda df: df.assign(w=df["w"].where(df.index != 4, np.inf)),
     r"column 'w', row 5 \(line 6\): value inf is not finite"),
    (lambda df: df.assign(w=df["w"].where(df.index != 6, np.nan)), r"column 'w', row 7 \(line 8\): missing value"),
    (lambda df: df.assign(w="heavy"), r"option --weights w: column 'w' is not numeric"),
    (lambda df: df.drop(columns="w"), r"option --weights w: column 'w' not found"),
])
def test_bad_weights_are_refused_by_row_and_nothing_is_stored(tmp_path, change, message):
    """Weights finite and > 0: the first row at fault is named (file row and CSV line); a blank weight
    is a missing value (--missing drop leaves its row out); nothing lands in the data folder."""
    df = change(_weighted().dropna().reset_index(drop=True))
    with pytest.raises(UserInputError, match=message):
        prepare_data(ModelSpec(formula="y ~ x + z", weights="w"), _write(df, tmp_path, "csv"), tmp_path / "data")
    assert not list((tmp_path / "data").glob("validated/*.parquet"))


@pytest.fixture(scope="module")
def weighted_run(tmp_path_factory, cli_env):
    folder = tmp_path_factory.mktemp("weights-cli")
    df = _weighted()
    _write(df, folder, "csv")
    result = linreg("run", "table.csv", "--formula", FORMULAS[0], "--missing", "drop", "--weights", "w",
                    "--cov", "HC1", cwd=folder, env=cli_env)
    return folder, df, version_from_stdout(result)


def test_a_weighted_run_writes_the_contract_fields(weighted_run, cli_env):
    """coefficients.json names the weights and holds statsmodels' WLS (HC1) fit; show says it is
    weighted; sgd_model.pt's state_dict is the SGD fit on the raw terms."""
    folder, df, version = weighted_run
    doc = json.loads((version / "coefficients.json").read_text())
    ref = _wls(FORMULAS[0], df, "HC1")
    assert doc["weights"] == "w" and doc["exact"]["cov_type"] == "HC1" and doc["nobs"] == ref.nobs
    np.testing.assert_allclose([doc["exact"]["intercept"], *doc["exact"]["coefficients"]], ref.params.to_numpy(),
                               rtol=1e-10)
    se = [doc["exact"]["std_errors"]["intercept"], *doc["exact"]["std_errors"]["coefficients"]]
    np.testing.assert_allclose(se, ref.bse.to_numpy(), rtol=1e-8)
    assert doc["exact"]["r_squared"] == pytest.approx(ref.rsquared, rel=1e-8)
    assert doc["sgd"]["converged"] is True
    model = torch.load(version / "sgd_model.pt", weights_only=True)
    assert model["weights"] == "w" and model["intercept"] is True and "bias" in model["trained"]
    np.testing.assert_allclose(model["state_dict"]["weight"][0].numpy(), doc["sgd"]["coefficients"], rtol=0)
    # the model as trained, on the whitened rows: s y_shift + y_scale (s bias + a @ weight) = s X b_sgd
    X, root = ref.model.exog, np.sqrt(ref.model.weights)
    sc, trained = model["scaling"], model["trained"]
    a = (root[:, None] * X) @ sc["input_map"].numpy()
    got = root * float(sc["y_shift"]) + float(sc["y_scale"]) * (root * float(trained["bias"][0])
                                                               + a @ trained["weight"][0].numpy())
    sgd = np.array([doc["sgd"]["intercept"], *doc["sgd"]["coefficients"]])
    np.testing.assert_allclose(got, root * (X @ sgd), rtol=1e-9, atol=1e-9 * np.abs(root * (X @ sgd)).max())
    shown = linreg("show", str(version), cwd=folder, env=cli_env)
    assert shown.returncode == 0 and "weighted least squares (weights w)" in shown.stdout


def test_predict_from_a_weighted_version_is_statsmodels_wls_prediction(weighted_run, cli_env):
    """New rows need no weights (statsmodels predicts for weight 1): mean, robust std_error and both
    intervals as WLS's get_prediction gives them."""
    folder, df, version = weighted_run
    new = df.dropna().iloc[:20].drop(columns=["y", "w"])
    new.to_csv(folder / "new.csv", index=False)
    result = linreg("predict", str(version), "new.csv", "--out", "p.parquet", cwd=folder, env=cli_env)
    assert result.returncode == 0, result.stderr
    out = pq.read_table(folder / "p.parquet").to_pandas()
    frame = _wls(FORMULAS[0], df, "HC1").get_prediction(new).summary_frame(alpha=0.05)
    np.testing.assert_allclose(out["prediction"], frame["mean"], rtol=1e-9)
    np.testing.assert_allclose(out["std_error"], frame["mean_se"], rtol=1e-7)
    np.testing.assert_allclose(out["pi_lower"], frame["obs_ci_lower"], rtol=1e-7)


def test_a_bad_weight_through_the_cli_is_exit_2_with_one_line(tmp_path, cli_env):
    df = _weighted().dropna().reset_index(drop=True)
    df.loc[3, "w"] = 0
    _write(df, tmp_path, "csv")
    result = linreg("run", "table.csv", "--formula", "y ~ x", "--weights", "w", cwd=tmp_path, env=cli_env)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "row 4 (line 5): weight 0.0 is not > 0" in result.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "artifacts").exists()


def test_weighted_and_unweighted_versions_are_different_models():
    """Drift compares versions of the same model only: the weights are part of it."""
    from tasks.publish.schema import Coefficients

    a = Coefficients("y", ("x",), True, {}, {}, weights="w")
    b = Coefficients("y", ("x",), True, {}, {})
    assert not a.same_model(b) and a.model_differences(b) == ["weights 'w' vs None"]


def test_the_ui_summary_says_the_fit_is_weighted_and_by_which_column():
    from tasks.publish.markdown import summary_markdown
    from tests.test_summary import _Comparison, _doc, drift

    doc = _doc(1.0, 2.0, weights="w_*x")
    text = summary_markdown(doc, _Comparison(), "/tmp/v1", drift(None, None, doc), {}, [])
    assert r"weighted least squares, weights w\_\*x" in text


def test_the_deployment_route_fits_a_weighted_model_inside_the_flow(prefect_harness, tmp_path):
    """A scheduled run has no CLI pass before it: the flow's prepare-data task reads the weights
    beside the formula's columns and the clusters, and the version holds statsmodels' WLS."""
    from flows.regression import regression_flow
    from tasks.config import RunConfig

    df, formula = _weighted(), "y ~ x + z + C(store)"
    config = RunConfig(data=_write(df, tmp_path, "csv"), artifacts_dir=tmp_path / "artifacts",
                       data_dir=tmp_path / "data", model=ModelSpec(formula=formula, weights="w", missing="drop"),
                       cov="cluster:firm", train=TrainConfig(device="cpu", epochs=200))
    state = regression_flow(config=config, return_state=True)
    assert state.is_completed(), state
    doc = json.loads((Path(state.result()) / "coefficients.json").read_text())
    ref = _wls(formula, df, "cluster")
    assert doc["weights"] == "w" and doc["exact"]["cov_groups"] == 19 and doc["nobs"] == ref.nobs
    np.testing.assert_allclose([doc["exact"]["intercept"], *doc["exact"]["coefficients"]], ref.params.to_numpy(),
                               rtol=1e-10)
    se = [doc["exact"]["std_errors"]["intercept"], *doc["exact"]["std_errors"]["coefficients"]]
    np.testing.assert_allclose(se, ref.bse.to_numpy(), rtol=1e-8)
