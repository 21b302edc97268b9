"""`linreg predict`: predictions from real stored versions, against statsmodels' get_prediction on the
same training data (an independent fit: pinv of the raw design), and its bad-input rules.

Three versions are fitted once, in-process: three features with an intercept, the same without one
(at alpha 0.01), and a cubic in one feature. The command runs in-process for the numbers and through
the console script for the exit codes and messages (each of those fails before any fit).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import statsmodels.api as sm

import flows.commands.predict
from flows.commands.predict import predict_command
from tasks.errors import UserInputError
from tests.test_cli import cli_env, linreg  # noqa: F401 - cli_env is a fixture

INTERVALS = {"prediction": "mean", "std_error": "mean_se", "ci_lower": "mean_ci_lower",
             "ci_upper": "mean_ci_upper", "pi_lower": "obs_ci_lower", "pi_upper": "obs_ci_upper"}
COLUMNS = ("prediction", "std_error", "ci_lower", "ci_upper", "pi_lower", "pi_upper", "sgd_prediction")


@dataclass(frozen=True)
class Fitted:
    """One stored version and the data it was fitted on."""

    path: Path
    artifacts_dir: Path
    features: tuple[str, ...]
    X: np.ndarray  # (n, n_features) training features
    y: np.ndarray
    degree: int
    intercept: bool

    def terms(self, X: np.ndarray) -> np.ndarray:
        return X if self.degree == 1 else np.column_stack([X[:, 0] ** k for k in range(1, self.degree + 1)])

    def oracle(self, X0: np.ndarray, alpha: float) -> pd.DataFrame:
        """statsmodels' summary_frame(alpha) for the new rows X0."""
        design = lambda X: sm.add_constant(self.terms(X), has_constant="add") if self.intercept else self.terms(X)
        return sm.OLS(self.y, design(self.X)).fit().get_prediction(design(X0)).summary_frame(alpha=alpha)

    def new_rows(self, m: int, seed: int, spread: float = 1.0) -> np.ndarray:
        """m rows drawn around the training features (spread > 1 reaches outside their range)."""
        rng = np.random.default_rng(seed)
        lo, hi = self.X.min(axis=0), self.X.max(axis=0)
        mid, half = (lo + hi) / 2, (hi - lo) / 2 * spread
        return rng.uniform(mid - half, mid + half, size=(m, len(self.features)))


def _fit(root: Path, features: dict[str, np.ndarray], y: np.ndarray, *, degree: int = 1, intercept: bool = True,
         alpha: float = 0.05) -> Fitted:
    from flows.regression import regression_flow
    from tasks.config import ModelSpec, RunConfig, TrainConfig

    root.mkdir()
    pq.write_table(pa.table({**features, "y": y}), root / "train.parquet")
    config = RunConfig(data=root / "train.parquet", artifacts_dir=root / "artifacts", data_dir=root / "data",
                       model=ModelSpec(features=tuple(features), degree=degree, intercept=intercept),
                       train=TrainConfig(epochs=3000), alpha=alpha)
    state = regression_flow(config=config, return_state=True)
    assert state.is_completed(), state
    return Fitted(Path(state.result()), root / "artifacts", tuple(features), np.column_stack(list(features.values())),
                  y, degree, intercept)


@pytest.fixture(scope="module")
def versions(prefect_harness, tmp_path_factory) -> dict[str, Fitted]:
    rng = np.random.default_rng(9)
    n = 120
    cols = {"x1": rng.normal(2.0, 1.0, n), "x2": rng.uniform(-3.0, 5.0, n), "x3": rng.normal(10.0, 3.0, n)}
    y = 40.0 + 2.0 * cols["x1"] - 0.7 * cols["x2"] + 0.3 * cols["x3"] + rng.normal(0, 0.5, n)
    x = rng.uniform(0.5, 3.0, n)
    cubic = 5.0 + 1.5 * x - 2.0 * x**2 + 0.8 * x**3 + rng.normal(0, 0.2, n)
    root = tmp_path_factory.mktemp("predict-versions")
    return {
        "linear": _fit(root / "linear", cols, y),
        "origin": _fit(root / "origin", cols, y, intercept=False, alpha=0.01),
        "cubic": _fit(root / "cubic", {"x": x}, cubic, degree=3),
    }


def write_rows(path: Path, fitted: Fitted, X0: np.ndarray, **extra) -> Path:
    """The rows X0 (and extra columns first) as a .csv (round-trip reprs) or .parquet file."""
    frame = pd.DataFrame({**extra, **dict(zip(fitted.features, X0.T))})
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return path


def predict(fitted: Fitted, data: Path, out: Path, *, model: str = "exact", alpha: float | None = None) -> pd.DataFrame:
    path = predict_command(fitted.artifacts_dir, str(fitted.path), data, out=out, model=model, alpha=alpha)
    assert path == out.resolve()
    return pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)


def assert_matches_statsmodels(result: pd.DataFrame, expected: pd.DataFrame) -> None:
    for ours, theirs in INTERVALS.items():
        np.testing.assert_allclose(result[ours].to_numpy(), expected[theirs].to_numpy(), rtol=1e-10, atol=0,
                                   err_msg=ours)


# --------------------------------------------------------------------------------------------
# The numbers


@pytest.mark.parametrize("alpha", [0.05, 0.01])
@pytest.mark.parametrize("kind", ["linear", "origin", "cubic"])
def test_predictions_and_intervals_equal_statsmodels_get_prediction(versions, kind, alpha, tmp_path):
    """prediction, std_error, the mean's interval and the prediction interval agree to 1e-10 relative."""
    fitted = versions[kind]
    X0 = fitted.new_rows(60, seed=1, spread=1.3)
    result = predict(fitted, write_rows(tmp_path / "new.parquet", fitted, X0), tmp_path / "p.parquet", alpha=alpha)
    assert tuple(result.columns) == (*fitted.features, *COLUMNS, "extrapolated")
    assert (result[[*fitted.features, *COLUMNS]].dtypes == np.float64).all() and result["extrapolated"].dtype == bool
    np.testing.assert_array_equal(result[list(fitted.features)].to_numpy(), X0)
    assert_matches_statsmodels(result, fitted.oracle(X0, alpha))


def test_the_default_alpha_is_the_versions_alpha(versions, tmp_path):
    """The version fitted at alpha 0.01 predicts 99% intervals unless --alpha says otherwise."""
    fitted = versions["origin"]
    X0 = fitted.new_rows(20, seed=2)
    result = predict(fitted, write_rows(tmp_path / "new.parquet", fitted, X0), tmp_path / "p.parquet")
    assert_matches_statsmodels(result, fitted.oracle(X0, 0.01))


@pytest.mark.parametrize("kind", ["linear", "origin", "cubic"])
def test_sgd_prediction_is_the_stored_sgd_coefficients_on_the_terms(versions, kind, tmp_path):
    """sgd_prediction = [1, terms] @ coefficients.json's sgd parameters, to 1e-12."""
    fitted = versions[kind]
    X0 = fitted.new_rows(30, seed=3)
    sgd = json.loads((fitted.path / "coefficients.json").read_text())["sgd"]
    expected = fitted.terms(X0) @ np.array(sgd["coefficients"]) + (sgd["intercept"] if fitted.intercept else 0.0)
    result = predict(fitted, write_rows(tmp_path / "new.parquet", fitted, X0), tmp_path / "p.parquet")
    np.testing.assert_allclose(result["sgd_prediction"].to_numpy(), expected, rtol=1e-12, atol=0)


def test_model_sgd_centres_the_intervals_on_the_sgd_prediction(versions, tmp_path):
    """--model sgd: prediction is the SGD model's, the intervals keep the exact fit's widths, and
    exact_prediction holds the exact fit's prediction."""
    fitted = versions["linear"]
    data = write_rows(tmp_path / "new.parquet", fitted, fitted.new_rows(25, seed=4))
    exact = predict(fitted, data, tmp_path / "exact.parquet")
    sgd = predict(fitted, data, tmp_path / "sgd.parquet", model="sgd")
    assert tuple(sgd.columns) == (*fitted.features, *COLUMNS, "exact_prediction", "extrapolated")
    np.testing.assert_array_equal(sgd["prediction"], exact["sgd_prediction"])
    np.testing.assert_array_equal(sgd["exact_prediction"], exact["prediction"])
    np.testing.assert_array_equal(sgd["std_error"], exact["std_error"])
    for lower, upper in (("ci_lower", "ci_upper"), ("pi_lower", "pi_upper")):
        half = (exact[upper] - exact[lower]) / 2
        np.testing.assert_allclose(sgd[upper] - sgd["prediction"], half, rtol=1e-9)
        np.testing.assert_allclose(sgd["prediction"] - sgd[lower], half, rtol=1e-9)


def test_csv_and_parquet_inputs_and_outputs_hold_the_same_numbers(versions, tmp_path):
    """A CSV input with extra columns and no target, and a CSV output, give Parquet's numbers exactly."""
    fitted = versions["linear"]
    X0 = fitted.new_rows(40, seed=5)
    extra = {"label": [f"r{i}" for i in range(len(X0))], "z": np.ones(len(X0))}
    parquet = predict(fitted, write_rows(tmp_path / "new.parquet", fitted, X0, **extra), tmp_path / "p.parquet")
    csv = predict(fitted, write_rows(tmp_path / "new.csv", fitted, X0, **extra), tmp_path / "p.csv")
    # (z = 1.0 is written "1" in CSV and read back as an integer: the values are compared, not dtypes)
    pd.testing.assert_frame_equal(csv, parquet, check_exact=True, check_dtype=False)


def test_every_input_column_is_kept_in_order_and_a_clash_is_renamed(versions, tmp_path, capsys):
    """An id, a text column and a column called `prediction` come back beside the predictions, in
    the input's order and row order, with their types; the clash is written as input_prediction and
    the log says so; `extrapolated` flags exactly the rows outside the fitted range."""
    fitted = versions["linear"]
    X0 = fitted.new_rows(30, seed=9)
    X0[[4, 11], 0] = fitted.X[:, 0].max() + 2.0
    extra = {"id": np.arange(100, 130), "town": [f"t{i % 3}" for i in range(30)], "prediction": np.zeros(30)}
    for suffix in ("parquet", "csv"):
        result = predict(fitted, write_rows(tmp_path / f"new.{suffix}", fitted, X0, **extra), tmp_path / f"p.{suffix}")
        assert tuple(result.columns) == ("id", "town", "input_prediction", *fitted.features, *COLUMNS, "extrapolated")
        assert result["id"].tolist() == list(range(100, 130)) and result["id"].dtype == np.int64
        assert result["town"].tolist() == extra["town"] and (result["input_prediction"] == 0).all()
        assert sorted(np.flatnonzero(result["extrapolated"])) == [4, 11]
        assert_matches_statsmodels(result, fitted.oracle(X0, 0.05))
    assert "input column 'prediction' is written as 'input_prediction'" in capsys.readouterr().err


def test_a_folder_of_parquet_files_is_predicted_in_file_name_order(versions, tmp_path):
    fitted = versions["cubic"]
    X0 = fitted.new_rows(50, seed=6)
    folder = tmp_path / "parts"
    folder.mkdir()
    for k, rows in enumerate(np.array_split(X0, 3)):
        write_rows(folder / f"part-{k}.parquet", fitted, rows)
    result = predict(fitted, folder, tmp_path / "p.parquet")
    np.testing.assert_array_equal(result["x"].to_numpy(), X0[:, 0])
    assert_matches_statsmodels(result, fitted.oracle(X0, 0.05))


def test_rows_keep_their_order_across_many_blocks(versions, tmp_path, monkeypatch):
    """Streamed 7 rows at a time, the output has the input's rows in order, each with its own prediction."""
    monkeypatch.setattr(flows.commands.predict, "BLOCK_ROWS", 7)
    fitted = versions["linear"]
    X0 = fitted.new_rows(100, seed=7)
    result = predict(fitted, write_rows(tmp_path / "new.csv", fitted, X0), tmp_path / "p.parquet")
    assert pq.ParquetFile(tmp_path / "p.parquet").metadata.num_row_groups > 1, "written block by block"
    np.testing.assert_array_equal(result[list(fitted.features)].to_numpy(), X0)
    assert_matches_statsmodels(result, fitted.oracle(X0, 0.05))


def test_rows_outside_the_fitted_range_get_one_warning_line(versions, tmp_path, capsys):
    fitted = versions["linear"]
    X0 = fitted.new_rows(30, seed=8)
    X0[[3, 17], 1] = fitted.X[:, 1].max() + 1.0
    X0[17, 2] = fitted.X[:, 2].min() - 1.0
    X0[25, 0] = fitted.X[:, 0].min() - 0.5
    predict(fitted, write_rows(tmp_path / "new.parquet", fitted, X0), tmp_path / "p.parquet")
    lines = capsys.readouterr().err.strip().splitlines()
    warnings = [line for line in lines if "warning" in line]
    assert len(warnings) == 1 and "3 of 30 rows" in warnings[0], lines
    assert f"30 rows from {fitted.path.name} (exact fit, alpha 0.05)" in lines[-1]


def test_the_default_output_is_named_after_the_data_in_the_current_folder(versions, tmp_path, monkeypatch):
    fitted = versions["linear"]
    data = write_rows(tmp_path / "new.csv", fitted, fitted.new_rows(5, seed=9))
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    path = predict_command(fitted.artifacts_dir, "latest", data, out=None, model="exact", alpha=None)
    assert path == (tmp_path / "here" / "new.predictions.parquet").resolve()
    assert pq.read_metadata(path).num_rows == 5


def snapshot(folder: Path) -> dict[str, str]:
    """relative path -> sha256 of every file under folder."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_bad_value_in_a_later_block_leaves_the_old_output_untouched(versions, tmp_path, monkeypatch):
    """The error is found in the third block: nothing is written, the existing --out file is unchanged."""
    monkeypatch.setattr(flows.commands.predict, "BLOCK_ROWS", 5)
    fitted = versions["linear"]
    data = write_rows(tmp_path / "new.csv", fitted, fitted.new_rows(20, seed=10))
    lines = data.read_text().splitlines()
    cells = lines[13].split(",")
    lines[13] = ",".join([cells[0], "abc", *cells[2:]])  # row 13, column x2
    data.write_text("\n".join(lines) + "\n")
    (tmp_path / "p.parquet").write_bytes(b"the old predictions")
    before = snapshot(tmp_path)
    with pytest.raises(UserInputError, match=r"new\.csv: column 'x2', row 13 \(line 14\): value 'abc' is not a number"):
        predict(fitted, data, tmp_path / "p.parquet")
    assert snapshot(tmp_path) == before


def damaged_copy(fitted: Fitted, root: Path, *files: str, drop: bool = False) -> Path:
    """A copy of the version under root/artifacts (returned) with files tampered with, or (drop)
    removed from the folder and the manifest, as in a version written before they existed."""
    copy = root / "artifacts" / fitted.path.name
    shutil.copytree(fitted.path, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    for file in files:
        if drop:
            (copy / file).unlink()
            del manifest["files"][file]
        else:
            (copy / file).write_bytes((copy / file).read_bytes() + b" ")
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return root / "artifacts"


@pytest.mark.parametrize("file", ["design.json", "sgd_model.pt", "coefficients.json"])
def test_a_version_whose_file_no_longer_matches_its_sha256_is_refused(versions, tmp_path, file):
    fitted = versions["linear"]
    artifacts = damaged_copy(fitted, tmp_path, file)
    data = write_rows(tmp_path / "new.csv", fitted, fitted.new_rows(5, seed=11))
    with pytest.raises(UserInputError, match=rf"damaged version \({file} does not match its sha256"):
        predict_command(artifacts, fitted.path.name, data, out=tmp_path / "p.csv",
                        model="exact", alpha=None)
    assert not (tmp_path / "p.csv").exists()


# --------------------------------------------------------------------------------------------
# Through the console script: the success contract, and bad input (exit 2, one line, nothing written)


@pytest.fixture(scope="module")
def workspace(versions, tmp_path_factory) -> Path:
    """A working folder: inputs for the linear version, a damaged and an old copy of it, an existing output."""
    root = tmp_path_factory.mktemp("predict-cli")
    fitted = versions["linear"]
    X0 = fitted.new_rows(40, seed=12)
    write_rows(root / "new.csv", fitted, X0)
    pd.DataFrame({"x1": X0[:, 0], "x3": X0[:, 2]}).to_csv(root / "no_x2.csv", index=False)
    text = (root / "new.csv").read_text().splitlines()
    text[3] = "abc," + text[3].split(",", 1)[1]  # row 3, column x1
    (root / "text.csv").write_text("\n".join(text) + "\n")
    X0[4, 2] = np.nan  # row 5, column x3
    write_rows(root / "nan.parquet", fitted, X0)
    damaged_copy(fitted, root / "damaged", "design.json")
    damaged_copy(fitted, root / "old", "design.json", "sgd_model.pt", drop=True)
    (root / "existing.parquet").write_bytes(b"the old predictions")
    return root


def test_linreg_predict_prints_the_output_file_as_its_only_stdout_line(versions, workspace, cli_env, tmp_path):
    fitted = versions["linear"]
    shutil.copy(workspace / "new.csv", tmp_path / "new.csv")
    result = linreg("predict", "new.csv", "--artifacts-dir", str(fitted.artifacts_dir), cwd=tmp_path, env=cli_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [str(tmp_path.resolve() / "new.predictions.parquet")]
    assert f"predict: 40 rows from {fitted.path.name} (exact fit, alpha 0.05) -> " in result.stderr
    X0 = pd.read_csv(tmp_path / "new.csv").to_numpy()
    assert_matches_statsmodels(pd.read_parquet(tmp_path / "new.predictions.parquet"), fitted.oracle(X0, 0.05))


# The arguments after `predict` ({V}: the linear version's name; its artifacts dir unless given), regexes for the message.
BAD = {
    "missing-feature": ("{V} no_x2.csv --out existing.parquet", [r"no_x2\.csv", r"'x2' not found", r"x1, x3"]),
    "non-numeric": ("{V} text.csv --out existing.parquet", [r"text\.csv", r"'x1'", r"row 3 \(line 4\)", "'abc'"]),
    "nan": ("{V} nan.parquet --out existing.parquet", [r"nan\.parquet", r"'x3'", r"row 5\b", "missing value"]),
    "unknown-version": ("nope new.csv --out existing.parquet", [r"version 'nope'"]),
    "bad-model": ("{V} new.csv --model ridge --out existing.parquet", [r"--model", "ridge"]),
    "bad-alpha": ("{V} new.csv --alpha 1.5 --out existing.parquet", [r"--alpha", r"1\.5"]),
    "bad-out-extension": ("{V} new.csv --out p.txt", [r"--out", r"p\.txt"]),
    "missing-out-folder": ("{V} new.csv --out nowhere/p.parquet", [r"--out", "nowhere"]),
    "damaged-version": ("{V} new.csv --out existing.parquet --artifacts-dir damaged/artifacts",
                        [r"damaged version", r"design\.json does not match its sha256"]),
    "version-before-predict": ("{V} new.csv --out existing.parquet --artifacts-dir old/artifacts",
                               [r"no design\.json", "before"]),
}


def cli_main(*args: str, cwd: Path, monkeypatch, capsys) -> tuple[int, str, str]:
    """`linreg ARGS` in-process through flows.cli.main, the console script's entry point: (exit, stdout, stderr)."""
    from flows.cli import main

    monkeypatch.chdir(cwd)
    with pytest.raises(SystemExit) as exit_:
        main(list(args))
    out, err = capsys.readouterr()
    return exit_.value.code, out, err


def bad_args(case: str, fitted: Fitted) -> tuple[list[str], list[str]]:
    args, patterns = BAD[case]
    args = args.format(V=fitted.path.name).split()
    return ["predict", *args, *([] if "--artifacts-dir" in args else ["--artifacts-dir", str(fitted.artifacts_dir)])], patterns


def assert_one_line_naming(stderr: str, patterns: list[str]) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("linreg: error: "), stderr
    for pattern in patterns:
        assert re.search(pattern, lines[0]), (pattern, lines[0])


@pytest.mark.parametrize("case", BAD)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(case, versions, workspace, monkeypatch, capsys):
    args, patterns = bad_args(case, versions["linear"])
    before = snapshot(workspace)
    code, out, err = cli_main(*args, cwd=workspace, monkeypatch=monkeypatch, capsys=capsys)
    assert code == 2, f"exit {code}\n{out}\n{err}"
    assert_one_line_naming(err, patterns)
    assert out == ""
    assert snapshot(workspace) == before


@pytest.mark.parametrize("case", ["non-numeric", "damaged-version"])
def test_the_console_script_exits_2_without_a_traceback(case, versions, workspace, cli_env):
    """The same through a real `linreg` process (a few cases: each process start costs seconds)."""
    args, patterns = bad_args(case, versions["linear"])
    before = snapshot(workspace)
    result = linreg(*args, cwd=workspace, env=cli_env)
    assert result.returncode == 2, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert_one_line_naming(result.stderr, patterns)
    assert result.stdout == ""
    assert snapshot(workspace) == before


def test_input_names_that_clash_with_the_predictions_are_renamed_once_each():
    """prediction -> input_prediction; input_prediction taken too -> input_2_prediction; others kept."""
    from tasks.exact.predict import kept_names, output_columns

    names, renamed = kept_names(("prediction", "x", "input_prediction", "extrapolated"), output_columns("exact"))
    assert names == ("input_2_prediction", "x", "input_prediction", "input_extrapolated")
    assert renamed == {"prediction": "input_2_prediction", "extrapolated": "input_extrapolated"}
    assert output_columns("sgd")[-2:] == ("exact_prediction", "extrapolated")
