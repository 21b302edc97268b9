"""NIST StRD certified values, reached through the real `linreg run` command line.

LRE (log relative error) = -log10(|estimate - certified| / |certified|), capped at 15, and the
log absolute error where the certified value is 0 (NIST/McCullough convention). The floors are
one digit under what the float64-parsed data allows (the exact rational solution scores 13.2-15).
"""

from __future__ import annotations

import json
import subprocess
import warnings
from pathlib import Path

import pytest

from tasks.exact.fit import IllConditionedWarning, fit_exact
from tasks.kernels.passes import Passes
from tests.helpers import NIST_DIR, lre, nist_design, nist_meta
from tests.prefect_server import BIN, cli_env
from tests.test_exact_streaming import reread

FLOORS = {
    "Norris": 13.0, "Pontius": 12.5, "NoInt1": 13.5, "NoInt2": 14.0, "Filip": 13.0, "Longley": 13.5,
    "Wampler1": 14.0, "Wampler2": 12.0, "Wampler3": 14.0, "Wampler4": 14.0, "Wampler5": 14.0,
}
STATS_FLOOR = 10.0


@pytest.fixture(scope="module")
def api_url(shared_server):
    """A real Prefect server for every run of this module (a run then takes seconds)."""
    return shared_server[0]


def run_cli(api_url: str, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "linreg"), "run", *args, "--artifacts-dir", str(tmp / "artifacts"),
         "--data-dir", str(tmp / "data")],
        env=cli_env(tmp / "home", api_url), capture_output=True, text=True, timeout=600,
    )


def nist_args(meta: dict) -> list[str]:
    detail = meta["model_detail"]
    args = [str(NIST_DIR / f"{meta['name']}.csv"), "--target", "y",
            "--features", ",".join(c for c in meta["columns"] if c != "y")]
    if detail["type"] == "polynomial":
        args += ["--degree", str(detail["degree"])]
    if not detail["intercept"]:
        args.append("--no-intercept")
    return args


def assert_certified(name: str, params: list[float], ses: list[float], residual_sd: float, r2: float) -> None:
    """Every certified coefficient to the floor; SEs, residual SD and R^2 to STATS_FLOOR digits."""
    cert = nist_meta(name)["certified"]
    assert len(params) == len(cert["parameters"])
    coef_lre = min(lre(q, c) for q, c in zip(params, cert["parameters"]))
    assert coef_lre >= FLOORS[name], f"{name}: coefficient LRE {coef_lre:.1f} < {FLOORS[name]}"
    assert min(lre(q, c) for q, c in zip(ses, cert["std_devs"])) >= STATS_FLOOR
    assert lre(residual_sd, cert["residual_sd"]) >= STATS_FLOOR
    assert lre(r2, cert["r_squared"]) >= STATS_FLOOR


@pytest.mark.parametrize("name", sorted(FLOORS))
def test_nist_certified_values_through_the_cli(name, api_url, tmp_path):
    """It reaches every NIST certified coefficient to the floor, and SEs, residual SD and R^2 to 10 digits."""
    meta = nist_meta(name)
    done = run_cli(api_url, tmp_path, *nist_args(meta))
    assert done.returncode == 0, done.stderr[-3000:]
    version = Path(done.stdout.strip().splitlines()[-1])
    coef = json.loads((version / "coefficients.json").read_text())
    exact = coef["exact"]
    head = [exact["intercept"]] if coef["intercept"] else []
    ses = ([exact["std_errors"]["intercept"]] if coef["intercept"] else []) + exact["std_errors"]["coefficients"]
    assert_certified(name, head + exact["coefficients"], ses, exact["residual_std"], exact["r_squared"])
    # Training on these designs must not blow up: a verdict either way, never a divergence.
    comparison = json.loads((version / "comparison.json").read_text())
    assert comparison["stop_reason"] != "diverged", comparison["summary"]
    if not comparison["converged"]:
        assert "did not converge" in comparison["summary"]
        assert "condition number" in comparison["summary"]


@pytest.mark.parametrize("reader", ["blocks of 3", "parquet row groups of 3"])
@pytest.mark.parametrize("name", sorted(FLOORS))
def test_nist_certified_values_when_streamed_in_3_row_blocks(name, reader, tmp_path):
    """The same floors when the exact fit reads the data 3 rows at a time, in 3 parts."""
    design = nist_design(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IllConditionedWarning)
        fit = fit_exact(reread(design, reader, tmp_path), passes=Passes(parts=3))
    ses = ([fit.se_intercept] if design.intercept else []) + list(fit.se_coefficients)
    assert_certified(name, fit.params.tolist(), ses, fit.residual_std, fit.r_squared)
