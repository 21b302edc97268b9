"""End to end: the regression flow run in-process against a temporary Prefect API.

Every file of the version directory is checked against its documented format (README, "What a run writes"),
with numbers recomputed independently here (numpy least squares, hashlib).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

# The tutorial's exact least-squares line through data/seed.csv.
CONTRACT_FILES = {"coefficients.json", "comparison.json", "loss_history.parquet", "fit.png", "loss.png",
                  "manifest.json"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
VERSION_TIME = re.compile(r"^(\d{8}T\d{6})")
from tests.helpers import TUTORIAL_B0, TUTORIAL_B1


@dataclass(frozen=True)
class FlowRun:
    """One in-process run of the flow and where it wrote."""

    path: Path
    artifacts_dir: Path
    data_dir: Path
    data: Path
    flow_run_id: object
    started: datetime
    finished: datetime


def run_flow(data: Path, artifacts_dir: Path, data_dir: Path, **model) -> FlowRun:
    """Run regression_flow once (the caller holds the Prefect harness) and return where it wrote."""
    from flows.regression import regression_flow
    from tasks.config import ModelSpec, RunConfig

    config = RunConfig(data=data, artifacts_dir=artifacts_dir, data_dir=data_dir, model=ModelSpec(**model))
    started = datetime.now(timezone.utc)
    state = regression_flow(config=config, return_state=True)
    finished = datetime.now(timezone.utc)
    assert state.is_completed(), f"flow run ended in {state!r}"
    path = Path(state.result())
    return FlowRun(path, artifacts_dir, data_dir, data, state.state_details.flow_run_id, started, finished)


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def latest_name(artifacts_dir: Path) -> str:
    """The version that `latest` names (a symlink, or a file holding the name)."""
    link = artifacts_dir / "latest"
    assert link.exists() or link.is_symlink(), f"{link} is missing"
    if link.is_symlink():
        return Path(os.readlink(link)).name
    return link.read_text().strip()


def tree_digest(folder: Path) -> dict[str, tuple[int, int, str]]:
    """name -> (size, mtime_ns, sha256) of every file in a folder."""
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(folder.iterdir())}


def assert_png(path: Path) -> None:
    """A real, non-blank PNG image."""
    import matplotlib.image

    raw = path.read_bytes()
    assert raw[:8] == PNG_SIGNATURE, f"{path.name} is not a PNG"
    image = matplotlib.image.imread(io.BytesIO(raw), format="png")
    assert image.ndim == 3 and image.shape[0] >= 100 and image.shape[1] >= 100, image.shape
    assert float(image.std()) > 0, f"{path.name} is blank"


def assert_complete_version(path: Path) -> dict:
    """Every contract file is there and manifest.files matches the bytes on disk; returns the manifest."""
    present = {p.name for p in path.iterdir()}
    assert CONTRACT_FILES <= present, f"missing: {CONTRACT_FILES - present}"
    manifest = read_json(path / "manifest.json")
    files = manifest["files"]
    assert set(files) == present - {"manifest.json"}, "manifest.files must list every other file"
    for name, digest in files.items():
        assert digest == hashlib.sha256((path / name).read_bytes()).hexdigest(), f"sha256 of {name}"
    assert manifest["version"] == path.name
    return manifest


def leaves(doc: object, key: str = "") -> list[tuple[str, object]]:
    """(key, value) for every leaf of a nested JSON document."""
    if isinstance(doc, dict):
        return [pair for k, v in doc.items() for pair in leaves(v, str(k))]
    if isinstance(doc, list):
        return [pair for v in doc for pair in leaves(v, key)]
    return [(key, doc)]


def ols_oracle(X: np.ndarray, y: np.ndarray) -> dict:
    """An independent least-squares solve with the classical statistics; X includes the ones column."""
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    n, p = X.shape
    residual = y - X @ beta
    rss = float(residual @ residual)
    sigma2 = rss / (n - p)
    return {
        "beta": beta,
        "se": np.sqrt(sigma2 * np.diag(np.linalg.inv(X.T @ X))),
        "r_squared": 1 - rss / float(((y - y.mean()) ** 2).sum()),
        "residual_std": math.sqrt(sigma2),
        "mse": rss / n,
        "cond": float(np.linalg.cond(X)),
    }


# --------------------------------------------------------------------------------------------
# One run on the tutorial's ten points, shared by the per-file checks.


@pytest.fixture(scope="module")
def seed_run(prefect_harness, tmp_path_factory, seed_csv_text) -> FlowRun:
    root = tmp_path_factory.mktemp("seed-run")
    data = root / "seed.csv"
    data.write_text(seed_csv_text)
    return run_flow(data, root / "artifacts", root / "data")


@pytest.fixture(scope="module")
def seed_frame(seed_csv_text) -> pd.DataFrame:
    return pd.read_csv(io.StringIO(seed_csv_text))


def test_the_flow_returns_the_absolute_path_of_a_complete_version(seed_run):
    """regression_flow returns an absolute path under the artifacts dir holding every contract file."""
    assert seed_run.path.is_absolute()
    assert seed_run.path.parent == seed_run.artifacts_dir.resolve()
    assert seed_run.path.is_dir()
    assert_complete_version(seed_run.path)


def test_coefficients_json_has_every_contract_key_and_the_exact_line(seed_run, seed_frame):
    """coefficients.json: the tutorial's line to 1e-12, statistics equal to an independent solve."""
    doc = read_json(seed_run.path / "coefficients.json")
    assert doc["target"] == "y"
    assert doc["terms"] == ["x"]
    assert doc["intercept"] is True

    exact = doc["exact"]
    for key in ("intercept", "coefficients", "std_errors", "r_squared", "residual_std", "condition_number"):
        assert key in exact, key
    assert exact["intercept"] == pytest.approx(TUTORIAL_B0, abs=1e-12)
    assert len(exact["coefficients"]) == 1
    assert exact["coefficients"][0] == pytest.approx(TUTORIAL_B1, abs=1e-12)

    X = np.column_stack([np.ones(len(seed_frame)), seed_frame["x"].to_numpy()])
    oracle = ols_oracle(X, seed_frame["y"].to_numpy())
    assert [exact["intercept"], *exact["coefficients"]] == pytest.approx(oracle["beta"], rel=1e-12)
    se = exact["std_errors"]
    assert [se["intercept"], *se["coefficients"]] == pytest.approx(oracle["se"], rel=1e-9)
    assert exact["r_squared"] == pytest.approx(oracle["r_squared"], rel=1e-12)
    assert exact["residual_std"] == pytest.approx(oracle["residual_std"], rel=1e-12)
    assert exact["condition_number"] == pytest.approx(oracle["cond"], rel=1e-9)

    sgd = doc["sgd"]
    for key in ("intercept", "coefficients", "epochs", "final_loss", "converged", "optimizer", "lr"):
        assert key in sgd, key
    assert sgd["converged"] is True
    assert sgd["optimizer"] == "sgd"
    assert isinstance(sgd["epochs"], int) and 1 <= sgd["epochs"] <= 10_000
    assert isinstance(sgd["lr"], float) and sgd["lr"] > 0, "lr 'auto' is recorded as the step it chose"
    assert math.isfinite(sgd["final_loss"])
    assert sgd["intercept"] == pytest.approx(TUTORIAL_B0, rel=1e-6)
    assert sgd["coefficients"] == pytest.approx([TUTORIAL_B1], rel=1e-6)


def test_numbers_are_written_with_round_trip_precision(seed_run):
    """Each float in coefficients.json is written as its shortest exact repr (17 significant digits at most)."""
    text = (seed_run.path / "coefficients.json").read_text()
    doc = json.loads(text)
    for value in (doc["exact"]["intercept"], doc["exact"]["coefficients"][0], doc["sgd"]["intercept"]):
        assert repr(value) in text


def test_comparison_json_matches_the_coefficients(seed_run, seed_frame):
    """comparison.json: differences over intercept and coefficients, the MSEs, excess = sgd - exact."""
    comp = read_json(seed_run.path / "comparison.json")
    coef = read_json(seed_run.path / "coefficients.json")
    for key in ("max_abs_diff", "max_rel_diff", "exact_mse", "sgd_mse", "excess_mse", "converged"):
        assert key in comp, key
    exact = np.array([coef["exact"]["intercept"], *coef["exact"]["coefficients"]])
    sgd = np.array([coef["sgd"]["intercept"], *coef["sgd"]["coefficients"]])
    assert comp["max_abs_diff"] == pytest.approx(np.max(np.abs(sgd - exact)), rel=1e-9, abs=1e-15)
    assert comp["max_rel_diff"] == pytest.approx(np.max(np.abs(sgd - exact) / np.abs(exact)), rel=1e-9, abs=1e-15)

    x, y = seed_frame["x"].to_numpy(), seed_frame["y"].to_numpy()
    X = np.column_stack([np.ones(len(x)), x])
    assert comp["exact_mse"] == pytest.approx(ols_oracle(X, y)["mse"], rel=1e-12)
    assert comp["sgd_mse"] == pytest.approx(float(np.mean((y - X @ sgd) ** 2)), rel=1e-12)
    assert comp["excess_mse"] == comp["sgd_mse"] - comp["exact_mse"]
    assert comp["converged"] is True
    assert comp["converged"] == coef["sgd"]["converged"]


def test_loss_history_has_one_int64_epoch_and_float64_loss_per_epoch(seed_run):
    """loss_history.parquet: epoch int64, loss float64, one row per epoch: the loss of the parameters
    before that epoch's step (the tutorial's convention), so the final loss, after the last step, is
    below the last row (gradient descent with lr 1/L descends) and at the exact minimum here."""
    import pyarrow as pa

    table = pq.read_table(seed_run.path / "loss_history.parquet")
    assert table.schema.field("epoch").type == pa.int64()
    assert table.schema.field("loss").type == pa.float64()
    sgd = read_json(seed_run.path / "coefficients.json")["sgd"]
    assert table.num_rows == sgd["epochs"]
    epoch = table.column("epoch").to_numpy()
    loss = table.column("loss").to_numpy()
    assert np.all(np.diff(epoch) > 0), "epochs increase"
    assert np.all(np.isfinite(loss))
    assert sgd["final_loss"] <= loss[-1]
    exact_mse = read_json(seed_run.path / "comparison.json")["exact_mse"]
    assert sgd["final_loss"] == pytest.approx(exact_mse, rel=1e-9)


@pytest.mark.parametrize("name", ["fit.png", "loss.png"])
def test_plots_are_valid_png_images(seed_run, name):
    """fit.png and loss.png are real, non-blank PNG images."""
    assert_png(seed_run.path / name)


def test_manifest_records_data_parameters_environment_timings_and_file_hashes(seed_run):
    """manifest.json: version, created_at, data (source, sha256, rows, parquet), parameters, environment, timings, files."""
    import prefect
    import torch

    manifest = assert_complete_version(seed_run.path)
    for key in ("version", "created_at", "data", "parameters", "environment", "timings", "files"):
        assert key in manifest, key

    created = datetime.fromisoformat(manifest["created_at"])
    assert created.utcoffset() == timedelta(0), "created_at is UTC"
    assert seed_run.started <= created <= seed_run.finished

    data = manifest["data"]
    assert Path(data["source"]) == seed_run.data.resolve()
    assert re.fullmatch(r"[0-9a-f]{64}", data["sha256"])
    assert data["rows"] == 10
    assert Path(data["parquet"]) == (seed_run.data_dir / "validated" / f"{data['sha256']}.parquet").resolve()

    params = dict(leaves(manifest["parameters"]))
    assert params.get("epochs") == 10_000 and params.get("optimizer") == "sgd"
    assert params.get("lr") == "auto" and params.get("dtype") == "float64" and params.get("target") == "y"

    env = leaves(manifest["environment"])
    assert ("prefect", prefect.__version__) in env
    assert ("torch", torch.__version__) in env
    assert ("numpy", np.__version__) in env

    timings = manifest["timings"]
    assert isinstance(timings, dict) and len(timings) >= 3
    assert all(isinstance(v, (int, float)) and v >= 0 for v in timings.values()), timings


def test_version_name_starts_with_utc_time_and_carries_the_data_hash(seed_run):
    """<version> = UTC time first, then (somewhere) the first 8 hex digits of data.sha256."""
    manifest = read_json(seed_run.path / "manifest.json")
    name = seed_run.path.name
    match = VERSION_TIME.match(name)
    assert match, f"{name!r} does not start with a UTC time"
    stamp = datetime.strptime(match.group(1), "%Y%m%dT%H%M%S").replace(tzinfo=timezone.utc)
    assert seed_run.started.replace(microsecond=0) <= stamp <= seed_run.finished
    assert manifest["data"]["sha256"][:8] in name


def test_latest_names_the_version(seed_run):
    """<artifacts-dir>/latest names the new version."""
    assert latest_name(seed_run.artifacts_dir) == seed_run.path.name
    assert (seed_run.artifacts_dir / "latest").resolve() == seed_run.path


def test_validated_input_is_stored_once_as_content_addressed_parquet(seed_run, seed_frame):
    """data_dir/validated/<sha256>.parquet holds the validated table and nothing half-written is left."""
    sha = read_json(seed_run.path / "manifest.json")["data"]["sha256"]
    folder = seed_run.data_dir / "validated"
    assert [p.name for p in folder.iterdir()] == [f"{sha}.parquet"]
    stored = pd.read_parquet(folder / f"{sha}.parquet")
    assert len(stored) == 10
    for column in ("x", "y"):
        np.testing.assert_array_equal(stored[column].to_numpy(dtype=float), seed_frame[column].to_numpy())


def test_prefect_ui_gets_the_summary_and_the_coefficient_table(seed_run):
    """The flow run publishes a markdown artifact `linreg-summary` and a table `linreg-coefficients`."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[seed_run.flow_run_id]))
        )
    by_key = {a.key: a for a in artifacts}
    assert {"linreg-summary", "linreg-coefficients"} <= set(by_key), sorted(map(str, by_key))
    summary = by_key["linreg-summary"]
    assert summary.type == "markdown"
    assert seed_run.path.name in summary.data
    table = by_key["linreg-coefficients"]
    assert table.type == "table"
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    flat = [value for row in rows for value in (row.values() if isinstance(row, dict) else row)]
    assert any(isinstance(v, float) and v == pytest.approx(TUTORIAL_B1, abs=1e-12) for v in flat), rows


# --------------------------------------------------------------------------------------------
# Several runs into one artifacts dir.


def test_two_runs_make_two_versions_in_creation_order_and_leave_the_first_untouched(
        prefect_harness, tmp_path, seed_csv_text):
    """A second run adds a newer version, `latest` moves to it, and the first version is not changed."""
    data = tmp_path / "seed.csv"
    data.write_text(seed_csv_text)
    artifacts, data_dir = tmp_path / "artifacts", tmp_path / "data"
    first = run_flow(data, artifacts, data_dir)
    before = tree_digest(first.path)
    parquet = next((data_dir / "validated").iterdir())
    parquet_stat = parquet.stat()

    second = run_flow(data, artifacts, data_dir)
    assert first.path != second.path
    assert sorted([second.path.name, first.path.name]) == [first.path.name, second.path.name]
    m1, m2 = assert_complete_version(first.path), assert_complete_version(second.path)
    assert datetime.fromisoformat(m1["created_at"]) < datetime.fromisoformat(m2["created_at"])
    assert latest_name(artifacts) == second.path.name
    assert tree_digest(first.path) == before, "a version is never changed"
    # The same data is stored once: the second run leaves the Parquet file as it was.
    assert [p.name for p in (data_dir / "validated").iterdir()] == [parquet.name]
    assert (parquet.stat().st_mtime_ns, parquet.stat().st_ino) == (parquet_stat.st_mtime_ns, parquet_stat.st_ino)


def test_concurrent_runs_get_distinct_complete_versions(prefect_harness, tmp_path, seed_csv_text):
    """Two flows at once into the same folders: two complete versions, a drift chain, no temp folders left."""
    data = tmp_path / "seed.csv"
    data.write_text(seed_csv_text)
    artifacts, data_dir = tmp_path / "artifacts", tmp_path / "data"
    results: list[FlowRun] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def worker() -> None:
        try:
            barrier.wait(timeout=60)
            results.append(run_flow(data, artifacts, data_dir))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    assert len(results) == 2
    names = {r.path.name for r in results}
    assert len(names) == 2, "concurrent runs must get distinct versions"
    for run in results:
        assert_complete_version(run.path)
    visible = {p.name for p in artifacts.iterdir() if not p.name.startswith(".")}
    assert visible == names | {"latest"}
    hidden_dirs = [p.name for p in artifacts.iterdir() if p.name.startswith(".") and p.is_dir()]
    assert hidden_dirs == [], f"temp folders left behind: {hidden_dirs}"
    assert not [p for p in artifacts.iterdir() if p.name.startswith((".tmp", ".latest"))]
    assert latest_name(artifacts) == max(names)
    # Drift is measured as each version is named: the later one's is since the earlier one.
    first, second = sorted(names)
    assert read_json(artifacts / first / "coefficients.json")["drift"]["since"] is None
    assert read_json(artifacts / second / "coefficients.json")["drift"]["since"] == first
    stored = [p.name for p in (data_dir / "validated").iterdir()]
    assert len(stored) == 1 and stored[0].endswith(".parquet"), stored


# --------------------------------------------------------------------------------------------
# Beyond the tutorial: several features.


def test_three_features_fit_the_independent_solve(prefect_harness, tmp_path):
    """50 rows, 3 features (seeded synthetic data): exact fit = numpy lstsq, SGD converges, fit.png drawn."""
    rng = np.random.default_rng(20240607)
    X = rng.normal(size=(50, 3))
    y = 1.5 + X @ np.array([2.0, -1.0, 0.5]) + rng.normal(scale=0.1, size=50)
    data = tmp_path / "three.csv"
    pd.DataFrame({"x1": X[:, 0], "x2": X[:, 1], "x3": X[:, 2], "y": y}).to_csv(data, index=False)
    frame = pd.read_csv(data)  # what the pipeline reads, to the last bit of the CSV text
    design = np.column_stack([np.ones(50), frame[["x1", "x2", "x3"]].to_numpy()])
    oracle = ols_oracle(design, frame["y"].to_numpy())

    run = run_flow(data, tmp_path / "artifacts", tmp_path / "data")
    manifest = assert_complete_version(run.path)
    assert manifest["data"]["rows"] == 50
    coef = read_json(run.path / "coefficients.json")
    assert coef["terms"] == ["x1", "x2", "x3"]
    exact = [coef["exact"]["intercept"], *coef["exact"]["coefficients"]]
    assert exact == pytest.approx(oracle["beta"], rel=1e-10, abs=1e-12)
    se = coef["exact"]["std_errors"]
    assert [se["intercept"], *se["coefficients"]] == pytest.approx(oracle["se"], rel=1e-8)
    assert coef["sgd"]["converged"] is True
    assert [coef["sgd"]["intercept"], *coef["sgd"]["coefficients"]] == pytest.approx(oracle["beta"], rel=1e-5)
    assert_png(run.path / "fit.png")
    assert_png(run.path / "loss.png")


# --------------------------------------------------------------------------------------------
# The other model options and input formats the contract names.


def test_no_intercept_writes_null_intercepts_and_the_fit_through_the_origin(prefect_harness, tmp_path,
                                                                          seed_csv_text, seed_frame):
    """--no-intercept: both intercepts are null and the slope is sum(xy)/sum(x^2)."""
    data = tmp_path / "seed.csv"
    data.write_text(seed_csv_text)
    run = run_flow(data, tmp_path / "artifacts", tmp_path / "data", intercept=False)
    assert_complete_version(run.path)
    coef = read_json(run.path / "coefficients.json")
    assert coef["intercept"] is False
    assert coef["exact"]["intercept"] is None
    assert coef["sgd"]["intercept"] is None
    x, y = seed_frame["x"].to_numpy(), seed_frame["y"].to_numpy()
    slope = float(x @ y / (x @ x))
    assert coef["exact"]["coefficients"] == pytest.approx([slope], rel=1e-12)
    assert coef["sgd"]["coefficients"] == pytest.approx([slope], rel=1e-6)


def test_degree_two_fits_the_quadratic(prefect_harness, tmp_path, seed_csv_text, seed_frame):
    """--degree 2: terms x, x^2 and coefficients equal to numpy's polynomial least squares."""
    data = tmp_path / "seed.csv"
    data.write_text(seed_csv_text)
    run = run_flow(data, tmp_path / "artifacts", tmp_path / "data", degree=2)
    assert_complete_version(run.path)
    coef = read_json(run.path / "coefficients.json")
    assert coef["terms"] == ["x", "x^2"]
    x, y = seed_frame["x"].to_numpy(), seed_frame["y"].to_numpy()
    oracle = ols_oracle(np.column_stack([np.ones_like(x), x, x**2]), y)
    assert [coef["exact"]["intercept"], *coef["exact"]["coefficients"]] == pytest.approx(oracle["beta"], rel=1e-9)
    assert_png(run.path / "fit.png")


def test_parquet_file_and_folder_give_the_same_fit_and_the_same_content_hash(prefect_harness, tmp_path,
                                                                            seed_frame, seed_run):
    """The same table as CSV, one .parquet file or a folder of .parquet files: one content hash, one fit."""
    single = tmp_path / "seed.parquet"
    seed_frame.to_parquet(single, index=False)
    folder = tmp_path / "parts"
    folder.mkdir()
    seed_frame.iloc[:6].to_parquet(folder / "part-0.parquet", index=False)
    seed_frame.iloc[6:].to_parquet(folder / "part-1.parquet", index=False)
    artifacts, data_dir = tmp_path / "artifacts", tmp_path / "data"
    runs = [run_flow(single, artifacts, data_dir), run_flow(folder, artifacts, data_dir)]
    manifests = [assert_complete_version(r.path) for r in runs]
    csv_sha = read_json(seed_run.path / "manifest.json")["data"]["sha256"]
    assert manifests[0]["data"]["sha256"] == manifests[1]["data"]["sha256"] == csv_sha
    assert [m["data"]["rows"] for m in manifests] == [10, 10]
    assert len(list((data_dir / "validated").iterdir())) == 1
    for run in runs:
        coef = read_json(run.path / "coefficients.json")
        assert coef["exact"]["intercept"] == pytest.approx(TUTORIAL_B0, abs=1e-12)
        assert coef["exact"]["coefficients"] == pytest.approx([TUTORIAL_B1], abs=1e-12)
