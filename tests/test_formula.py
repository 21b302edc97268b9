"""Formula models (--formula): statsmodels' parameter names, order and fit on tables with text and
numeric categorical columns, interactions, transforms and missing cells, streamed in blocks whose
first ones lack a level; and the same through the real CLI (run, show, predict)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import statsmodels.formula.api as smf

from tasks.config import ModelSpec
from tasks.errors import UserInputError
from tasks.exact.fit import fit_exact
from tasks.exact.inference import infer
from tasks.ingest.prepare import prepare_data
from tests.test_cli import cli_env, linreg, version_from_stdout  # noqa: F401 - cli_env is a fixture

FORMULAS = [
    "y ~ x + z + C(store) + C(year) + x:z + np.log(x)",
    "y ~ store * x + I(x ** 2)",
    "y ~ C(year):x + z - 1",
    "y ~ x + C(store) + 0",
]


def _table(n: int = 400, seed: int = 3) -> pd.DataFrame:
    """x > 0, z, store A-E (E only in the last 20 rows: a level the first blocks never see), year
    2019-2023 (numbers used as C(year)), y; z missing on two rows and store on one."""
    rng = np.random.default_rng(seed)
    store = rng.choice(list("ABCD"), n).astype(object)
    store[-20:] = "E"
    df = pd.DataFrame({"x": np.round(rng.uniform(0.5, 3, n), 3), "z": np.round(rng.normal(size=n), 3),
                       "store": store, "year": rng.integers(2019, 2024, n)})
    shift = {"A": 0.0, "B": 1.5, "C": -0.5, "D": 2.0, "E": 3.0}
    df["y"] = np.round(1 + 2 * df.x + 0.5 * df.z + df.store.map(shift) + 0.1 * (df.year - 2019)
                       + rng.normal(0, 0.3, n), 4)
    df.loc[[5, 50], "z"] = np.nan
    df.loc[77, "store"] = None
    return df


def _write(df: pd.DataFrame, folder: Path, fmt: str) -> Path:
    path = folder / f"table.{fmt}"
    if fmt == "csv":
        df.to_csv(path, index=False)
    else:
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path, row_group_size=50)
    return path


def _spec(formula: str, **options) -> ModelSpec:
    return ModelSpec(formula=formula, missing="drop", **options)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
@pytest.mark.parametrize("formula", FORMULAS)
def test_the_fit_is_statsmodels_ols_on_the_same_rows(tmp_path, formula, fmt):
    """Names and order as statsmodels' formula API gives them; parameters to 1e-10, standard errors
    and p-values to 1e-8, with --missing drop leaving out exactly the rows missing='drop' does."""
    df = _table()
    prepared = prepare_data(_spec(formula), _write(df, tmp_path, fmt), tmp_path / "data", block_rows=37)
    design = prepared.design(_spec(formula))
    fit = fit_exact(design, prepared.geometry)
    ref = smf.ols(formula, df, missing="drop").fit()
    assert (["Intercept"] if design.intercept else []) + list(design.term_names) == list(ref.params.index)
    assert prepared.rows == ref.nobs and prepared.dropped == len(df) - ref.nobs > 0
    np.testing.assert_allclose(fit.params, ref.params.to_numpy(), rtol=1e-10, atol=0)
    ses = ([fit.se_intercept] if design.intercept else []) + list(fit.se_coefficients)
    np.testing.assert_allclose(ses, ref.bse.to_numpy(), rtol=1e-8)
    stats = infer(fit, design.n, 0.05)
    np.testing.assert_allclose(stats.p_values, ref.pvalues.to_numpy(), rtol=1e-8, atol=1e-300)
    assert fit.r_squared == pytest.approx(ref.rsquared, rel=1e-10)  # centered where the columns span 1
    assert stats.f_statistic == pytest.approx(ref.fvalue, rel=1e-8) and stats.df_model == ref.df_model


def test_the_content_hash_ignores_the_format_and_the_blocks(tmp_path):
    df, spec = _table(), _spec(FORMULAS[0])
    hashes = {prepare_data(spec, _write(df, tmp_path, fmt), tmp_path / "data", block_rows=rows).sha256
              for fmt in ("csv", "parquet") for rows in (7, 1000)}
    assert len(hashes) == 1
    other = df.copy()
    other.loc[10, "store"] = "B" if other.loc[10, "store"] != "B" else "C"  # one level changed
    (tmp_path / "other").mkdir()
    assert prepare_data(spec, _write(other, tmp_path / "other", "csv"), tmp_path / "data").sha256 not in hashes


def test_the_stored_table_keeps_the_text_columns_as_text(tmp_path):
    df = _table()
    prepared = prepare_data(_spec(FORMULAS[0]), _write(df, tmp_path, "csv"), tmp_path / "data")
    stored = pq.read_table(prepared.path)
    assert stored.column_names == ["y", "store", "x", "year", "z"]  # the target, then the formula's columns
    assert str(stored.schema.field("store").type) == "string" and stored.num_rows == 397


def test_too_many_levels_missing_cells_and_unknown_columns_are_refused_by_name(tmp_path):
    df = _table()
    path = _write(df, tmp_path, "csv")
    with pytest.raises(UserInputError, match=r"column 'store' has more than 3 levels .*--max-levels 3"):
        prepare_data(_spec("y ~ C(store)", max_levels=3), path, tmp_path / "data")
    with pytest.raises(UserInputError, match=r"column 'z'.*missing value"):
        prepare_data(ModelSpec(formula="y ~ x + z"), path, tmp_path / "data")
    with pytest.raises(UserInputError, match=r"column 'w' not found"):
        prepare_data(_spec("y ~ x + w"), path, tmp_path / "data")
    assert not (tmp_path / "data" / "validated").exists() or not any((tmp_path / "data" / "validated").iterdir())


# --- through the CLI -----------------------------------------------------------------------------

@pytest.mark.parametrize(("args", "named"), [
    (["--formula", "y ~ x", "--target", "y"], "--target"),
    (["--formula", "y ~ x", "--degree", "2"], "--degree"),
    (["--formula", "y x"], "one '~'"),
    (["--formula", "y ~ center(x)"], "center()"),
    (["--formula", "np.log(y) ~ x"], "left side must be one column"),
    (["--formula", "y ~ x", "--cov", "HC9"], "--cov"),
    (["--formula", "y ~ x", "--missing", "skip"], "--missing"),
])
def test_a_bad_formula_is_exit_2_with_one_line_before_anything_runs(tmp_path, cli_env, args, named):
    path = _write(_table(), tmp_path, "csv")
    result = linreg("run", str(path), *args, cwd=tmp_path, env=cli_env)
    assert result.returncode == 2, result.stderr
    assert named in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr and not (tmp_path / "artifacts").exists()


@pytest.fixture(scope="module")
def formula_run(tmp_path_factory, cli_env):
    folder = tmp_path_factory.mktemp("formula-cli")
    df = _table()
    path = _write(df, folder, "csv")
    result = linreg("run", str(path), "--formula", FORMULAS[0], "--missing", "drop", cwd=folder, env=cli_env)
    return folder, df, version_from_stdout(result)


def test_a_robust_run_writes_and_predicts_with_its_covariance(formula_run, cli_env):
    """--cov HC3 through the CLI: coefficients.json's standard errors and cov_type are statsmodels',
    and predict's std_error is sqrt(x V x') with normal intervals, as statsmodels' robust results give."""
    folder, df, _ = formula_run
    result = linreg("run", "table.csv", "--formula", FORMULAS[0], "--missing", "drop", "--cov", "HC3",
                    cwd=folder, env=cli_env)
    version = version_from_stdout(result)
    doc = json.loads((version / "coefficients.json").read_text())
    ref = smf.ols(FORMULAS[0], df, missing="drop").fit(cov_type="HC3")
    assert doc["exact"]["cov_type"] == "HC3"
    se = [doc["exact"]["std_errors"]["intercept"], *doc["exact"]["std_errors"]["coefficients"]]
    np.testing.assert_allclose(se, ref.bse.to_numpy(), rtol=1e-8)
    assert doc["exact"]["f_statistic"] == pytest.approx(ref.fvalue, rel=1e-8)
    new = df.dropna().iloc[:10].drop(columns="y")
    new.to_csv(folder / "new-hc3.csv", index=False)
    done = linreg("predict", str(version), "new-hc3.csv", "--out", "hc3.parquet", cwd=folder, env=cli_env)
    assert done.returncode == 0, done.stderr
    out = pq.read_table(folder / "hc3.parquet").to_pandas()
    frame = ref.get_prediction(new).summary_frame(alpha=0.05)
    np.testing.assert_allclose(out["std_error"], frame["mean_se"], rtol=1e-7)
    np.testing.assert_allclose(out["ci_lower"], frame["mean_ci_lower"], rtol=1e-7)


def test_a_formula_run_writes_the_contract_fields(formula_run):
    _, df, version = formula_run
    doc = json.loads((version / "coefficients.json").read_text())
    ref = smf.ols(FORMULAS[0], df, missing="drop").fit()
    assert doc["formula"] == FORMULAS[0] and doc["nobs"] == ref.nobs == 397 and doc["dropped_rows"] == 3
    assert doc["weights"] is None and doc["exact"]["cov_type"] == "nonrobust"
    assert doc["terms"] == list(ref.params.index[1:]) and doc["intercept"] is True
    got = [doc["exact"]["intercept"], *doc["exact"]["coefficients"]]
    np.testing.assert_allclose(got, ref.params.to_numpy(), rtol=1e-10)


def test_show_names_the_formula_and_its_terms(formula_run, cli_env):
    folder, _, version = formula_run
    result = linreg("show", str(version), cwd=folder, env=cli_env)
    assert result.returncode == 0, result.stderr
    assert FORMULAS[0] in result.stdout and "C(store)[T.E]" in result.stdout and "x:z" in result.stdout


def test_predict_builds_the_same_columns_and_refuses_an_unseen_level(formula_run, cli_env):
    folder, df, version = formula_run
    new = df.dropna().iloc[:25].drop(columns="y")
    new.to_csv(folder / "new.csv", index=False)
    result = linreg("predict", str(version), "new.csv", "--out", "p.parquet", cwd=folder, env=cli_env)
    assert result.returncode == 0, result.stderr
    out = pq.read_table(folder / "p.parquet").to_pandas()
    ref = smf.ols(FORMULAS[0], df, missing="drop").fit().get_prediction(new).summary_frame(alpha=0.05)
    np.testing.assert_allclose(out["prediction"], ref["mean"], rtol=1e-9)
    np.testing.assert_allclose(out["std_error"], ref["mean_se"], rtol=1e-7)
    np.testing.assert_allclose(out["pi_lower"], ref["obs_ci_lower"], rtol=1e-7)
    unseen = new.copy()
    unseen.iloc[3, unseen.columns.get_loc("store")] = "Z"
    unseen.to_csv(folder / "unseen.csv", index=False)
    bad = linreg("predict", str(version), "unseen.csv", "--out", "u.parquet", cwd=folder, env=cli_env)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    line = bad.stderr.strip().splitlines()[-1]
    assert "column 'store'" in line and "row 4" in line and "'Z'" in line
    assert not (folder / "u.parquet").exists()


@pytest.mark.parametrize("cov_type", ["HC0", "HC1", "HC2", "HC3"])
def test_robust_covariance_is_statsmodels_cov_type(tmp_path, cov_type):
    """Standard errors, p-values, intervals and the Wald F of statsmodels' fit(cov_type=...) (normal
    p and intervals, F on the slopes), from one more pass run part by part."""
    from tasks.kernels.passes import Passes

    df, formula = _table(), FORMULAS[0]
    prepared = prepare_data(_spec(formula), _write(df, tmp_path, "csv"), tmp_path / "data", block_rows=37)
    design = prepared.design(_spec(formula))
    fit = fit_exact(design, prepared.geometry, Passes(parts=3), cov_type=cov_type)
    stats = infer(fit, design.n, 0.05)
    ref = smf.ols(formula, df, missing="drop").fit(cov_type=cov_type)
    assert fit.cov_type == cov_type
    np.testing.assert_allclose([fit.se_intercept, *fit.se_coefficients], ref.bse.to_numpy(), rtol=1e-8)
    np.testing.assert_allclose(fit.cov_params, ref.cov_params().to_numpy(), rtol=1e-8, atol=1e-14)
    np.testing.assert_allclose(stats.p_values, ref.pvalues.to_numpy(), rtol=1e-8, atol=1e-300)
    np.testing.assert_allclose(stats.conf_int, ref.conf_int(0.05).to_numpy(), rtol=1e-8)
    assert stats.f_statistic == pytest.approx(ref.fvalue, rel=1e-8)
    assert stats.f_pvalue == pytest.approx(ref.f_pvalue, rel=1e-8)


def test_clustered_covariance_is_statsmodels_cluster(tmp_path):
    """--cov cluster:COL: the cluster column (text here) is checked and stored beside the model's, read
    back block by block in the pass, and gives statsmodels' CRV1 errors, normal p-values and its F
    with G - 1 denominator degrees of freedom."""
    from tasks.kernels.passes import Passes

    df = _table().dropna()
    df["firm"] = np.random.default_rng(8).choice([f"firm {i}" for i in range(23)], len(df))
    formula = "y ~ x + z + C(store)"
    prepared = prepare_data(ModelSpec(formula=formula), _write(df, tmp_path, "csv"), tmp_path / "data",
                            block_rows=37, extra={"firm": "--cov cluster:firm"})
    assert prepared.extra == ("firm",) and pq.read_schema(prepared.path).names[-1] == "firm"
    design = prepared.design(ModelSpec(formula=formula))
    fit = fit_exact(design, prepared.geometry, Passes(parts=3), "cluster", "firm")
    stats = infer(fit, design.n, 0.05)
    ref = smf.ols(formula, df).fit(cov_type="cluster", cov_kwds={"groups": df["firm"]})
    assert fit.cov_groups == 23
    np.testing.assert_allclose([fit.se_intercept, *fit.se_coefficients], ref.bse.to_numpy(), rtol=1e-8)
    np.testing.assert_allclose(stats.p_values, ref.pvalues.to_numpy(), rtol=1e-8, atol=1e-300)
    assert stats.f_statistic == pytest.approx(ref.fvalue, rel=1e-8)
    assert stats.f_pvalue == pytest.approx(ref.f_pvalue, rel=1e-8)
    with pytest.raises(UserInputError, match=r"--cov cluster:plant: column 'plant' not found"):
        prepare_data(ModelSpec(formula=formula), _write(df, tmp_path, "csv"), tmp_path / "data",
                     extra={"plant": "--cov cluster:plant"})


def test_grunfeld_with_firm_effects_and_firm_clusters_is_statsmodels(tmp_path):
    """A real public table a package ships (statsmodels' Grunfeld investment panel, 11 firms): firm
    effects with errors clustered by firm, where the clusters are fewer than the parameters and the
    Wald F uses the covariance's rank, as statsmodels' does."""
    import statsmodels.api as sm

    df = sm.datasets.grunfeld.load_pandas().data
    df.to_csv(tmp_path / "grunfeld.csv", index=False)
    formula = "invest ~ value + capital + C(firm)"
    prepared = prepare_data(ModelSpec(formula=formula), tmp_path / "grunfeld.csv", tmp_path / "data",
                            extra={"firm": "--cov cluster:firm"})
    fit = fit_exact(prepared.design(ModelSpec(formula=formula)), prepared.geometry, cov_type="cluster", cluster="firm")
    stats = infer(fit, prepared.rows, 0.05)
    with pytest.warns(UserWarning):  # statsmodels warns that the constraints' covariance is not of full rank
        ref = smf.ols(formula, df).fit(cov_type="cluster", cov_kwds={"groups": df["firm"]})
        ref_f, ref_p = ref.fvalue, ref.f_pvalue
    np.testing.assert_allclose(fit.params, ref.params.to_numpy(), rtol=1e-10)
    np.testing.assert_allclose([fit.se_intercept, *fit.se_coefficients], ref.bse.to_numpy(), rtol=1e-8)
    assert stats.f_statistic == pytest.approx(ref_f, rel=1e-8) and stats.f_pvalue == pytest.approx(ref_p, rel=1e-8)


def test_every_pass_of_a_formula_model_runs_part_by_part_through_pickle(tmp_path):
    """What --dask does to a pass: the function and each part of the design (its formula model with
    the table's levels) go through pickle to a worker; the exact fit, robust errors and training
    agree with the one-piece answer to float64 rounding."""
    import pickle

    from tasks.config import TrainConfig
    from tasks.kernels.passes import Passes
    from tasks.training.train import train_sgd

    calls = []

    def pickling_map(fn, parts):
        calls.append(len(parts))
        return [pickle.loads(pickle.dumps(fn))(pickle.loads(pickle.dumps(part))) for part in parts]

    df, formula = _table(), FORMULAS[0]
    prepared = prepare_data(_spec(formula), _write(df, tmp_path, "parquet"), tmp_path / "data", block_rows=37)
    design = prepared.design(_spec(formula))
    one = fit_exact(design, prepared.geometry, cov_type="HC2")
    parts = fit_exact(design, prepared.geometry, Passes(pickling_map, 3), cov_type="HC2")
    assert calls and set(calls) == {3}
    np.testing.assert_allclose(parts.params, one.params, rtol=1e-14)
    np.testing.assert_allclose(parts.se_coefficients, one.se_coefficients, rtol=1e-12)
    cfg = TrainConfig(device="cpu", epochs=50)
    np.testing.assert_allclose(train_sgd(design, cfg, prepared.geometry, passes=Passes(pickling_map, 3)).params,
                               train_sgd(design, cfg, prepared.geometry).params, rtol=1e-9)


def test_a_term_beyond_float64s_safe_range_is_refused_by_name(tmp_path):
    """The magnitude limits hold for the terms a formula computes, not only for its columns: x ** 150
    of x near 10 is 1e150, whose squares overflow; exit 2 names the term and the row."""
    df = _table().dropna()
    df["x"] = df["x"] + 9
    with pytest.raises(UserInputError, match=r"column 'I\(x \*\* 150\)', row \d+.*too large"):
        prepare_data(ModelSpec(formula="y ~ I(x ** 150) + z"), _write(df, tmp_path, "csv"), tmp_path / "data")
    assert not list((tmp_path / "data").glob("validated/*.parquet"))


def test_missing_drop_works_without_a_formula_too(tmp_path):
    """--missing drop with --target/--features: the rows with a blank in the model's columns are left
    out (statsmodels' missing='drop'), the others fitted; a blank in a column the model does not use
    leaves its row in."""
    df = _table()
    spec = ModelSpec(target="y", features=("x", "z"), missing="drop")
    prepared = prepare_data(spec, _write(df, tmp_path, "csv"), tmp_path / "data")
    fit = fit_exact(prepared.design(spec), prepared.geometry)
    ref = smf.ols("y ~ x + z", df, missing="drop").fit()
    assert prepared.rows == ref.nobs == 398 and prepared.dropped == 2  # store's blank does not count here
    np.testing.assert_allclose(fit.params, ref.params.to_numpy(), rtol=1e-10)


def test_the_deployment_route_ingests_a_formula_with_clusters_inside_the_flow(prefect_harness, tmp_path):
    """A scheduled (deployment) run has no CLI pass before it: the flow's prepare-data task reads the
    formula's columns and the cluster column itself, and the version holds statsmodels' clustered fit."""
    from flows.regression import regression_flow
    from tasks.config import RunConfig, TrainConfig

    df = _table().dropna()
    df["firm"] = np.random.default_rng(9).choice([f"firm {i}" for i in range(17)], len(df))
    formula = "y ~ x + z + C(store)"
    config = RunConfig(data=_write(df, tmp_path, "csv"), artifacts_dir=tmp_path / "artifacts",
                       data_dir=tmp_path / "data", model=ModelSpec(formula=formula), cov="cluster:firm",
                       train=TrainConfig(device="cpu", epochs=200))
    state = regression_flow(config=config, return_state=True)
    assert state.is_completed(), state
    doc = json.loads((Path(state.result()) / "coefficients.json").read_text())
    ref = smf.ols(formula, df).fit(cov_type="cluster", cov_kwds={"groups": df["firm"]})
    assert doc["formula"] == formula and doc["exact"]["cov_type"] == "cluster" and doc["exact"]["cov_groups"] == 17
    se = [doc["exact"]["std_errors"]["intercept"], *doc["exact"]["std_errors"]["coefficients"]]
    np.testing.assert_allclose(se, ref.bse.to_numpy(), rtol=1e-8)


@pytest.mark.parametrize("formula", FORMULAS + ["y ~ C(store):C(year) + x:z:C(store) + I(x ** 2) + np.sqrt(x)"])
def test_the_numpy_evaluation_of_the_terms_is_formulaics_bit_for_bit(formula):
    """The terms of a block come from numpy (a few ms) only where they equal formulaic's model matrix
    (tens of ms) bit for bit; a block holding a number that is no level of C(year) goes to formulaic."""
    from tasks.kernels.formula import FormulaModel

    rng = np.random.default_rng(5)
    levels = {"store": tuple("ABCDE"), "year": (2019, 2020, 2021, 2022, 2023)}
    model = FormulaModel(formula, "y", ("store", "x", "year", "z"), ("store",), levels)
    variables = list(model.variables)
    n = 3000
    block = {"store": rng.integers(0, 5, n).astype(float), "x": rng.uniform(0.5, 3, n),
             "year": rng.integers(2019, 2024, n).astype(float), "z": rng.normal(size=n)}
    values = np.column_stack([block[name] for name in variables])
    assert model._plan is not None
    np.testing.assert_array_equal(model.terms_of(values), model._formulaic_terms(values))
    if "C(year)" in formula:
        values[7, variables.index("year")] = 2031.0  # no level: formulaic's encoding, whatever it is
        assert model._plan.terms(model, values) is None
        np.testing.assert_array_equal(model.terms_of(values), model._formulaic_terms(values))


def test_terms_formulaic_evaluates_by_itself_never_take_the_numpy_path():
    """A transform the numpy evaluation does not know (formulaic's own `log`) leaves the plan out."""
    from tasks.kernels.formula import FormulaModel

    model = FormulaModel("y ~ log(x) + z", "y", ("x", "z"), (), {})
    values = np.column_stack([np.linspace(1, 2, 50), np.linspace(-1, 1, 50)])
    assert model._plan is None
    np.testing.assert_allclose(model.terms_of(values)[:, 0], np.log(values[:, 0]))
