"""The compiled kernels (tasks/kernels/compiled.py): error-free transforms checked exactly against
fractions.Fraction on random and adversarial inputs, the fused refinement sums against exact
rational sums, and a machine without numba running on the numpy kernels with one line saying so."""

from __future__ import annotations

import math
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest

from tasks.kernels import compiled

needs_numba = pytest.mark.skipif(not compiled.AVAILABLE, reason=compiled.WHY or "numba unavailable")

TINY = 5e-324  # the smallest subnormal
ADVERSARIAL = [
    (1e300, 1e-300), (1e300, -1e300), (-1e300, 1.0), (1e-300, 1e300), (TINY, TINY), (TINY, -TINY),
    (2.2250738585072014e-308, -2.225073858507201e-308), (0.0, -0.0), (-0.0, -0.0), (1.0, 2.0**-53),
    (1.0, -(2.0**-54)), (2.0**53, 1.0), (-(2.0**1023), 2.0**970), (3.0, 1e-17), (1e308, 1e308 * 0.7),
]


def _pairs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random doubles over the whole exponent range, both signs, with the adversarial pairs first."""
    rng = np.random.default_rng(seed)
    a = rng.uniform(1, 2, n) * 2.0 ** rng.integers(-1000, 1000, n) * rng.choice([-1.0, 1.0], n)
    b = rng.uniform(1, 2, n) * 2.0 ** rng.integers(-1000, 1000, n) * rng.choice([-1.0, 1.0], n)
    near = rng.integers(0, n, n // 4)  # close magnitudes: the cancelling cases
    b[near] = -a[near] * (1 + rng.normal(0, 1e-12, len(near)))
    fixed = np.array(ADVERSARIAL)
    return np.concatenate([fixed[:, 0], a]), np.concatenate([fixed[:, 1], b])


@needs_numba
def test_two_sum_is_exact_everywhere_it_does_not_overflow():
    """s + e == a + b in exact rationals, s the rounded sum, on every finite pair (subnormals, signed
    zeros and 1e300 apart included)."""
    a, b = _pairs(20000, 1)
    with np.errstate(over="ignore", invalid="ignore"):
        (s, e), _ = compiled.error_free(a, b)
    for x, y, si, ei in zip(a.tolist(), b.tolist(), s.tolist(), e.tolist()):
        if not math.isfinite(si):
            assert not math.isfinite(x + y)
            continue
        assert si == x + y
        assert Fraction(si) + Fraction(ei) == Fraction(x) + Fraction(y), (x, y, si, ei)


@needs_numba
def test_two_prod_is_exact_where_the_error_term_is_representable():
    """p + e == a * b exactly, p the rounded product, whenever the exact product neither overflows nor
    falls below 2^-969 (where its rounding error, about 2^-53 of it, could be subnormal): the
    condition of every error-free product."""
    a, b = _pairs(20000, 2)
    with np.errstate(over="ignore", invalid="ignore"):
        _, (p, e) = compiled.error_free(a, b)
    checked = 0
    for x, y, pi, ei in zip(a.tolist(), b.tolist(), p.tolist(), e.tolist()):
        exact = Fraction(x) * Fraction(y)
        if not math.isfinite(pi) or (exact != 0 and abs(exact) < Fraction(2) ** -969):
            continue
        assert pi == x * y
        assert Fraction(pi) + Fraction(ei) == exact, (x, y, pi, ei)
        checked += 1
    assert checked > 5000
    # a subnormal times a large number is an ordinary product: exact too
    _, (p, e) = compiled.error_free(np.array([TINY, 3 * TINY]), np.array([2.0**1000, -(2.0**900) * 1.5]))
    assert [Fraction(h) + Fraction(lo) for h, lo in zip(p, e)] == [Fraction(TINY) * 2**1000,
                                                                   Fraction(3 * TINY) * Fraction(-(2.0**900) * 1.5)]


def _exact_sums(X, y, beta, intercept, center):
    """sum r^2, sum d, sum d^2, X^T r (intercept's sum r first) in exact rationals."""
    b = [Fraction(v) for v in beta]
    k = int(intercept)
    rss = s1 = s2 = Fraction(0)
    grad = [Fraction(0)] * (X.shape[1] + k)
    for row, yi in zip(X.tolist(), y.tolist()):
        r = Fraction(yi) - (b[0] if k else 0) - sum(Fraction(x) * bj for x, bj in zip(row, b[k:]))
        d = Fraction(yi) - Fraction(center)
        rss, s1, s2 = rss + r * r, s1 + d, s2 + d * d
        if k:
            grad[0] += r
        for j, x in enumerate(row):
            grad[k + j] += Fraction(x) * r
    return [rss, s1, s2, *grad]


@needs_numba
@pytest.mark.parametrize("intercept", [True, False])
def test_the_fused_refinement_sums_are_the_exact_sums_to_double_double_accuracy(intercept):
    """Near the least-squares fixed point X^T r nearly cancels (the hard case for any dot product):
    every sum agrees with the exact rational sum to within 2^-90 of the sizes it is made of: each
    residual is a double-double sum of y and the products x_j b_j (t = |y| + |b0| + sum |x_j b_j|),
    so sum r^2 is good to about 2^-106 sum |r| t and X^T r to 2^-106 sum |x| t."""
    rng = np.random.default_rng(3)
    m, q = 3000, 4
    X = rng.normal(1000, 1, (m, q)) * rng.choice([1.0, 1e-8, 1e8], q)
    y = X @ rng.normal(size=q) + 5.0 + rng.normal(0, 1e-3, m)
    A = np.column_stack([np.ones(m), X]) if intercept else X
    beta = np.linalg.lstsq(A, y, rcond=None)[0]  # the float fit: X^T r nearly 0
    exact = _exact_sums(X, y, beta, intercept, 5.0)
    k = int(intercept)
    hi, lo = compiled.refine_sums(np.asfortranarray(X), y, beta[k:].copy(), np.zeros(q), float(beta[0]) if k else 0.0,
                                  0.0, intercept, 5.0, True, True)
    r = y - A @ beta
    t = np.abs(y) + np.abs(A) @ np.abs(beta)
    sizes = [np.sum(np.abs(r) * t), np.sum(np.abs(y - 5.0)), np.sum((y - 5.0) ** 2), *(np.abs(A).T @ t)]
    for got_hi, got_lo, want, size in zip(hi, lo, exact, sizes):
        assert abs(Fraction(got_hi) + Fraction(got_lo) - want) <= Fraction(size) * Fraction(2) ** -90


def test_without_numba_the_numpy_kernels_run_and_the_log_says_so_once(tmp_path):
    """A machine without a working numba: the same fit on today's numpy kernels, one log line."""
    script = """
import logging, sys, builtins
real = builtins.__import__
def no_numba(name, *args, **kwargs):
    if name == "numba" or name.startswith("numba.") or name == "llvmlite" or name.startswith("llvmlite."):
        raise ImportError("numba blocked for this test")
    return real(name, *args, **kwargs)
builtins.__import__ = no_numba
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
import numpy as np
from tasks.kernels import compiled
from tasks.kernels.design import Design
from tasks.exact.fit import fit_exact
compiled.MIN_ROWS = 0  # every pass asks for the compiled kernels
from tasks.kernels.gram import GramSums
GramSums(3).update(np.ones((4, 3)))  # an ingest pass past MIN_ROWS preloads them on a thread
rng = np.random.default_rng(0)
x = rng.normal(size=(500, 2))
y = x @ [1.0, -2.0] + 3 + rng.normal(size=500)
for _ in range(2):
    fit = fit_exact(Design.from_arrays(x, y, ("a", "b")))
ref = np.linalg.lstsq(np.column_stack([np.ones(500), x]), y, rcond=None)[0]
assert np.allclose(fit.params, ref, rtol=1e-12), (fit.params, ref)
assert not compiled.AVAILABLE
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
    lines = [line for line in done.stderr.splitlines() if "numba" in line]
    assert len(lines) == 1 and "numpy kernels" in lines[0], done.stderr


@needs_numba
def test_an_ingest_pass_past_min_rows_loads_the_kernels_on_a_thread_of_their_own():
    """The Gram sums of a pass that reaches MIN_ROWS start numba's import beside the pass (not on the
    fit); below MIN_ROWS nothing loads it."""
    script = """
import sys, threading
import numpy as np
from tasks.kernels import compiled
from tasks.kernels.gram import GramSums
sums = GramSums(3)
sums.update(np.ones((compiled.MIN_ROWS - 1, 3)))
assert "numba" not in sys.modules and not any(t.name == "linreg-numba-preload" for t in threading.enumerate())
sums.update(np.ones((1, 3)))
loader = [t for t in threading.enumerate() if t.name == "linreg-numba-preload"]
assert len(loader) == 1 and not loader[0].daemon
loader[0].join()
assert "numba" in sys.modules and compiled._state["module"] is not None
assert compiled.usable(compiled.MIN_ROWS)
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


@needs_numba
def test_a_fit_on_the_compiled_kernels_is_the_fit_on_the_numpy_kernels(monkeypatch):
    """The same certified coefficients (bit for bit: both are the float64 rounding of the exact
    solution) and the same statistics to 1e-14, whichever kernels sum the passes."""
    import tempfile
    from pathlib import Path

    import pandas as pd

    from tasks.config import ModelSpec
    from tasks.exact.fit import fit_exact
    from tasks.ingest.prepare import prepare_data

    rng = np.random.default_rng(6)
    df = pd.DataFrame({"a": rng.normal(100, 3, 2000), "b": rng.uniform(-1, 1, 2000),
                       "g": rng.choice(["p", "q", "r"], 2000)})
    df["y"] = 2 * df.a - df.b + (df.g == "q") * 0.5 + rng.normal(size=2000)
    spec = ModelSpec(features=("a", "b"))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.csv"
        df.to_csv(path, index=False)
        prepared = prepare_data(spec, path, Path(tmp) / "data", block_rows=300)
        design = prepared.design(spec)
        monkeypatch.setattr(compiled, "MIN_ROWS", 10**12)
        numpy_fit = fit_exact(design, prepared.geometry, cov_type="HC1")
        monkeypatch.setattr(compiled, "MIN_ROWS", 0)
        compiled_fit = fit_exact(design, prepared.geometry, cov_type="HC1")
    np.testing.assert_array_equal(compiled_fit.params, numpy_fit.params)
    assert compiled_fit.rss == pytest.approx(numpy_fit.rss, rel=1e-14)
    assert compiled_fit.r_squared == pytest.approx(numpy_fit.r_squared, rel=1e-14)
    np.testing.assert_allclose(compiled_fit.se_coefficients, numpy_fit.se_coefficients, rtol=1e-14)
