"""Nothing computed twice (issue 19): a run with the data hash, model and options of an earlier
version reuses its exact fit and training (Prefect's cache, keyed on the content hash and the
configuration) and names that version in its manifest's `reused_from`; --refresh recomputes; any
other option, or other data, computes afresh."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_cli import cli_env, linreg, version_from_stdout  # noqa: F401 - cli_env is a fixture


def _run(workspace: Path, env: dict, *args: str) -> tuple[Path, dict, str]:
    result = linreg("run", "data.csv", "--epochs", "200", *args, cwd=workspace, env=env)
    version = version_from_stdout(result)
    return version, json.loads((version / "manifest.json").read_text()), result.stderr


def _fits(version: Path) -> tuple[dict, dict]:
    doc = json.loads((version / "coefficients.json").read_text())
    return doc["exact"], doc["sgd"]


@pytest.fixture
def workspace(tmp_path, seed_csv_text) -> Path:
    (tmp_path / "data.csv").write_text(seed_csv_text)
    return tmp_path


def test_the_second_identical_run_reuses_the_first_ones_fits(workspace, cli_env):
    first, m1, _ = _run(workspace, cli_env)
    second, m2, log = _run(workspace, cli_env)
    assert "reused_from" not in m1 and m2["reused_from"] == first.name
    assert m1["fit_key"] == m2["fit_key"] and len(m1["fit_key"]) == 64
    assert f"reused the exact fit and the training of version {first.name}" in log
    assert "training: " not in log  # the training did not run again
    assert _fits(second) == _fits(first)
    assert m2["data"]["sha256"] == m1["data"]["sha256"]
    # --refresh recomputes (and the same numbers come out)
    third, m3, log = _run(workspace, cli_env, "--refresh")
    assert "reused_from" not in m3 and "training: " in log and _fits(third) == _fits(first)
    # the next run reuses the newest version with the key
    _, m4, _ = _run(workspace, cli_env)
    assert m4["reused_from"] == third.name


@pytest.fixture(scope="module")
def earlier(tmp_path_factory, seed_csv_text, cli_env) -> Path:
    """A workspace whose artifacts hold one version of the default run (its fits in the cache)."""
    folder = tmp_path_factory.mktemp("reuse-earlier")
    (folder / "data.csv").write_text(seed_csv_text)
    _run(folder, cli_env)
    return folder


@pytest.mark.parametrize("changed", [["--epochs", "201"], ["--alpha", "0.1"], ["--cov", "HC1"], ["--seed", "1"],
                                     ["--no-intercept"]])
def test_another_option_that_shapes_the_fits_computes_afresh(earlier, cli_env, changed):
    _, manifest, log = _run(earlier, cli_env, *changed)
    assert "reused_from" not in manifest and "reused the exact fit" not in log


def test_other_data_computes_afresh(workspace, cli_env):
    _run(workspace, cli_env)
    text = (workspace / "data.csv").read_text().replace("56.6", "56.7")
    (workspace / "data.csv").write_text(text)
    _, manifest, _ = _run(workspace, cli_env)
    assert "reused_from" not in manifest


def test_without_the_cached_results_the_fits_run_and_nothing_claims_reuse(workspace, cli_env, tmp_path_factory):
    """A version with the key, but a result storage that never saw its fits (another PREFECT_HOME or
    storage): the fits run, and the manifest does not claim reuse."""
    _run(workspace, cli_env)
    elsewhere = cli_env | {"PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(tmp_path_factory.mktemp("other-results"))}
    _, manifest, log = _run(workspace, elsewhere)
    assert "reused_from" not in manifest and "training: " in log
