"""`linreg diff A B`: two real versions compared, every figure checked against the two files.

Three in-process flow runs (module-scoped): a straight line on the seed data (A), the same model
on other data with fewer epochs (B), and a quadratic on the seed data (Q, a different model).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from flows.commands.diff import compare_versions, diff_report, diff_text
from tasks.errors import UserInputError
from tasks.publish.reader import VersionDocs
from tasks.publish.schema import Coefficients, ComparisonRecord, Manifest
from tests.test_cli import cli_env, linreg  # noqa: F401 - cli_env is a fixture

OTHER_CSV = "x,y\n1,3.1\n2,4.9\n3,7.2\n4,8.8\n5,11.1\n6,13.2\n"


@pytest.fixture(scope="module")
def runs(prefect_harness, tmp_path_factory, seed_csv_text) -> dict[str, Path]:
    """name -> version folder: "quad" first, then "a", then "b" (which `latest` names)."""
    from flows.regression import regression_flow
    from tasks.config import ModelSpec, RunConfig, TrainConfig

    root = tmp_path_factory.mktemp("diff")
    (root / "seed.csv").write_text(seed_csv_text)
    (root / "other.csv").write_text(OTHER_CSV)
    plan = {"quad": ("seed.csv", ModelSpec(degree=2), TrainConfig()),
            "a": ("seed.csv", ModelSpec(), TrainConfig()),
            "b": ("other.csv", ModelSpec(), TrainConfig(epochs=30))}
    out = {}
    for name, (data, model, train) in plan.items():
        config = RunConfig(data=root / data, model=model, train=train, artifacts_dir=root / "artifacts",
                           data_dir=root / "data")
        state = regression_flow(config=config, return_state=True)
        assert state.is_completed(), f"flow run ended in {state!r}"
        out[name] = Path(state.result())
    return out


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def as_json(artifacts: Path, a: str, b: str, force: bool = False) -> dict:
    def no_constants(name: str) -> None:
        raise AssertionError(f"{name} in the JSON output")

    return json.loads(diff_report(artifacts, a, b, force=force, as_json=True), parse_constant=no_constants)


def params(coef: dict, block: str, field: str | None = None) -> dict[str, float]:
    """name -> value of one block of coefficients.json, read here independently of flows.commands.diff."""
    source = coef[block] if field is None else coef[block][field]
    return {"intercept": source["intercept"], **dict(zip(coef["terms"], source["coefficients"]))}


def test_changes_equal_the_arithmetic_on_the_two_coefficient_files(runs):
    """abs, relative and standard-error changes are B - A, (B - A)/|A| and (B - A)/se_A per parameter."""
    ca, cb = read_json(runs["a"] / "coefficients.json"), read_json(runs["b"] / "coefficients.json")
    doc = as_json(runs["a"].parent, runs["a"].name, runs["b"].name)
    a, b, se = params(ca, "exact"), params(cb, "exact"), params(ca, "exact", "std_errors")
    assert [r["parameter"] for r in doc["exact"]] == ["intercept", "x"]
    for row in doc["exact"]:
        name = row["parameter"]
        assert (row["a"], row["b"]) == (a[name], b[name])
        assert row["abs_change"] == pytest.approx(b[name] - a[name], rel=1e-15)
        assert row["rel_change"] == pytest.approx((b[name] - a[name]) / abs(a[name]), rel=1e-15)
        assert row["se_change"] == pytest.approx((b[name] - a[name]) / se[name], rel=1e-15)
        assert abs(row["abs_change"]) > 0.1  # the data differ: so do the fits
    sgd_a, sgd_b = params(ca, "sgd"), params(cb, "sgd")
    assert [(r["parameter"], r["a"], r["b"]) for r in doc["sgd"]] == [
        (n, sgd_a[n], sgd_b[n]) for n in ("intercept", "x")]
    assert doc["r_squared"] == {"a": ca["exact"]["r_squared"], "b": cb["exact"]["r_squared"]}
    assert doc["residual_std"] == {"a": ca["exact"]["residual_std"], "b": cb["exact"]["residual_std"]}
    comp_a, comp_b = read_json(runs["a"] / "comparison.json"), read_json(runs["b"] / "comparison.json")
    assert doc["converged"] == {"a": comp_a["converged"], "b": comp_b["converged"]}
    assert doc["summary"] == {"a": comp_a["summary"], "b": comp_b["summary"]}

    text = diff_report(runs["a"].parent, runs["a"].name, runs["b"].name, force=False, as_json=False)
    x_line = next(line for line in text.splitlines() if line.split()[:1] == ["x"])
    assert x_line.split()[1:5] == [f"{a['x']:.10g}", f"{b['x']:.10g}", f"{b['x'] - a['x']:.4g}",
                                  f"{(b['x'] - a['x']) / abs(a['x']):.3g}"]
    verdict = {True: "converged", False: "not converged"}
    assert f"{verdict[comp_a['converged']]} -> {verdict[comp_b['converged']]}" in text


def test_latest_a_path_and_a_name_resolve_to_the_same_version(runs):
    artifacts = runs["a"].parent
    by_name = as_json(artifacts, runs["a"].name, runs["b"].name)
    assert as_json(artifacts, runs["a"].name, "latest") == by_name
    assert as_json(artifacts, str(runs["a"]), str(runs["b"])) == by_name
    assert by_name["b"]["version"] == runs["b"].name and by_name["b"]["path"] == str(runs["b"])


def test_only_the_parameters_that_differ_are_listed(runs):
    """B ran on other data with 30 epochs; everything else (model, alpha, folders) was the same."""
    pa = read_json(runs["a"] / "manifest.json")["parameters"]
    pb = read_json(runs["b"] / "manifest.json")["parameters"]
    doc = as_json(runs["a"].parent, runs["a"].name, runs["b"].name)
    assert doc["parameters"] == [{"key": "data", "a": pa["data"], "b": pb["data"]},
                                 {"key": "train.epochs", "a": 10_000, "b": 30}]
    text = diff_text(doc)
    assert "  train.epochs: 10000 -> 30" in text.splitlines()
    assert "model.degree" not in text and "alpha" not in text
    same = diff_report(runs["a"].parent, runs["a"].name, runs["a"].name, force=False, as_json=False)
    assert "parameters that differ: none" in same.splitlines()


def test_the_same_data_shows_equal_sha256_and_other_data_do_not(runs):
    sha = {k: read_json(p / "manifest.json")["data"]["sha256"] for k, p in runs.items()}
    assert sha["a"] == sha["quad"] != sha["b"]
    same = as_json(runs["a"].parent, runs["a"].name, runs["quad"].name, force=True)
    assert same["same_data"] is True and same["a"]["sha256"] == same["b"]["sha256"] == sha["a"]
    other = as_json(runs["a"].parent, runs["a"].name, runs["b"].name)
    assert other["same_data"] is False and other["b"]["sha256"] == sha["b"]
    text = diff_report(runs["a"].parent, runs["a"].name, runs["b"].name, force=False, as_json=False)
    assert f"sha256 {sha['a'][:12]}" in text and f"sha256 {sha['b'][:12]}" in text and ["data", "different"] in [
        line.split() for line in text.splitlines()]


def test_a_different_model_is_refused_naming_the_difference_unless_forced(runs):
    artifacts = runs["a"].parent
    with pytest.raises(UserInputError, match=r"terms \['x'\] vs \['x', 'x\^2'\].*--force") as info:
        diff_report(artifacts, runs["a"].name, runs["quad"].name, force=False, as_json=False)
    assert "\n" not in str(info.value)
    quad = read_json(runs["quad"] / "coefficients.json")
    doc = as_json(artifacts, runs["a"].name, runs["quad"].name, force=True)
    squared = doc["exact"][-1]
    assert [r["parameter"] for r in doc["exact"]] == ["intercept", "x", "x^2"]
    assert squared["a"] is None and squared["b"] == quad["exact"]["coefficients"][1]
    assert squared["abs_change"] is None and squared["rel_change"] is None
    text = diff_report(artifacts, runs["a"].name, runs["quad"].name, force=True, as_json=False)
    assert next(line for line in text.splitlines() if line.split()[:1] == ["x^2"]).split()[1] == "—"


def test_a_damaged_version_is_refused_naming_it(runs, tmp_path):
    copy = tmp_path / runs["b"].name
    shutil.copytree(runs["b"], copy)
    raw = bytearray((copy / "coefficients.json").read_bytes())
    at = raw.index(b'"r_squared": ') + len(b'"r_squared": 0.')
    raw[at] = ord("1") if raw[at] != ord("1") else ord("2")  # still valid JSON, one digit changed
    (copy / "coefficients.json").write_bytes(bytes(raw))
    with pytest.raises(UserInputError, match=rf"{copy.name}.*damaged.*coefficients\.json"):
        diff_report(runs["a"].parent, runs["a"].name, str(copy), force=False, as_json=False)


def _docs(coefficients: dict) -> VersionDocs:
    manifest = {"version": "v", "data": {"sha256": "0" * 64}, "parameters": {"alpha": 0.05}}
    return VersionDocs(Manifest.from_json(manifest), Coefficients.from_json(coefficients),
                       ComparisonRecord.from_json({"converged": True, "summary": "s"}), None)


def test_relative_and_standard_error_changes_are_blank_where_undefined():
    """A = 0 leaves the relative change undefined; a zero or missing standard error the se change."""
    block = {"intercept": 0.0, "coefficients": [2.0, -4.0], "std_errors": {"intercept": 0.5, "coefficients": [0.0]}}
    a = {"target": "y", "terms": ["x1", "x2"], "intercept": True, "exact": block, "sgd": block}
    b = a | {"exact": block | {"intercept": 1.0, "coefficients": [3.0, -3.0]}}
    rows = compare_versions(_docs(a), _docs(b))["exact"]
    assert [(r["abs_change"], r["rel_change"], r["se_change"]) for r in rows] == [
        (1.0, None, 2.0), (1.0, 0.5, None), (1.0, 0.25, None)]


def test_the_cli_exits_2_with_one_line_for_a_different_model_or_an_unknown_version(runs, cli_env, tmp_path):
    artifacts = str(runs["a"].parent)
    for args, named in (([runs["a"].name, runs["quad"].name], "terms"), ([runs["a"].name, "no-such"], "no-such")):
        result = linreg("diff", *args, "--artifacts-dir", artifacts, cwd=tmp_path, env=cli_env)
        assert result.returncode == 2, result.stderr
        assert len(result.stderr.splitlines()) == 1 and named in result.stderr, result.stderr
        assert "Traceback" not in result.stderr and not result.stdout
    result = linreg("diff", runs["a"].name, "latest", "--artifacts-dir", artifacts, cwd=tmp_path, env=cli_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip("\n") == diff_report(runs["a"].parent, runs["a"].name, runs["b"].name,
                                                     force=False, as_json=False)
    assert "exact fit" in result.stdout and not result.stderr.count("Traceback")
