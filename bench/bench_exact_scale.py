"""File to coefficients: linreg-flow's certified exact fit against what users run, each in its own process.

Every approach reads the same cached Parquet file (y, x1..xp) and fits y ~ 1 + x1 + ... + xp.
`work` is timed inside the child, after a warm-up fit of a 1e3-row file with the same columns (lazy
imports and first calls are set-up, not work); `process` is the child's whole life, imports and
warm-up included; peak RSS is the child's. One approach alone:
python -m bench.bench_exact_scale NAME FILE [WARMUP_FILE]
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.common import CACHE, bench_env, dataset, markdown_table, measure, mib, python, ratio, rows_name, secs

# (rows, features): every row count at 16 features, and 1e6 rows at fewer features.
FULL_GRID = [(10**5, 4), (10**6, 1), (10**6, 4), (10**6, 8)] + [(10**k, 16) for k in range(3, 8)]
SMOKE_GRID = [(1000, 1), (1000, 4)]
WARMUP_ROWS = 1000
CHILD_TIMEOUT_S = 1800.0

# An approach: file -> (intercept and coefficients, or None; a detail to show). Each imports what it
# uses itself, so that a child process loads only its own approach's libraries.
Fit = tuple[list[float] | None, str]


def read_table(path: str) -> Fit:
    """A plain pyarrow.parquet.read_table of the whole file: the floor of any file-to-fit. Timed as
    the second of two reads of the file in one process (issue 18's definition: the first one warms
    pyarrow's memory pool; child() makes it as part of the warm-up)."""
    import pyarrow.parquet as pq

    pq.read_table(path)
    return None, "the second read of the file in the process"


def linreg(path: str) -> Fit:
    """linreg-flow's streamed path: a stats and Gram pass (a TSQR pass only where the Gram is not enough), then the certified fit (refinement,
    standard errors, R^2, condition numbers)."""
    import warnings
    from dataclasses import replace

    import pyarrow.parquet as pq

    from tasks.exact.fit import fit_exact
    from tasks.kernels.design import Design
    from tasks.kernels.gram import gram_geometry, stats_and_gram
    from tasks.kernels.table import ColumnStats, ParquetTable
    from tasks.kernels.tsqr import design_geometry

    t0 = time.perf_counter()
    features = tuple(n for n in pq.read_schema(path).names if n != "y")
    columns = ("y", *features)
    table = ParquetTable(path, columns, pq.read_metadata(path).num_rows, ColumnStats.empty(len(columns)))
    stats, gram = stats_and_gram(table.blocks(), len(columns))  # the pass the pipeline's ingest makes
    design = Design(replace(table, stats=stats), features, "y")
    t1 = time.perf_counter()
    geometry = gram_geometry(design, gram) or design_geometry(design)  # as check_design: TSQR only if needed
    t2 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = fit_exact(design, geometry=geometry)
    t3 = time.perf_counter()
    return fit.params.tolist(), f"stats and Gram {secs(t1 - t0)} + geometry {secs(t2 - t1)} + fit {secs(t3 - t2)}"


def lstsq(path: str) -> Fit:
    """numpy.linalg.lstsq on [1, X] read with pyarrow."""
    import numpy as np
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    X = np.column_stack([np.ones(table.num_rows)] + [table[c].to_numpy() for c in table.column_names if c != "y"])
    return np.linalg.lstsq(X, table["y"].to_numpy(), rcond=None)[0].tolist(), ""


def sklearn(path: str) -> Fit:
    """pandas.read_parquet + scikit-learn's LinearRegression, as a practitioner writes it."""
    import pandas as pd
    from sklearn.linear_model import LinearRegression

    frame = pd.read_parquet(path)
    model = LinearRegression().fit(frame.drop(columns="y"), frame["y"])
    return [float(model.intercept_), *model.coef_.tolist()], ""


def statsmodels(path: str) -> Fit:
    """pandas.read_parquet + statsmodels OLS, with the standard errors linreg-flow also reports."""
    import pandas as pd
    import statsmodels.api as sm

    frame = pd.read_parquet(path)
    fit = sm.OLS(frame["y"], sm.add_constant(frame.drop(columns="y"))).fit()
    fit.bse  # noqa: B018 - computed lazily; linreg-flow's fit includes them
    return fit.params.tolist(), ""


# read_table first: it brings the file into the page cache for every approach after it.
APPROACHES: dict[str, Callable[[str], Fit]] = {
    "pyarrow read_table": read_table, "linreg-flow exact": linreg, "numpy lstsq": lstsq,
    "pandas + scikit-learn": sklearn, "pandas + statsmodels": statsmodels,
}
BASELINE = "linreg-flow exact"


@dataclass(frozen=True)
class Result:
    """One approach on one file: medians over repeats of work and process seconds, the largest peak RSS."""

    rows: int
    p: int
    approach: str
    work_s: float
    process_s: float
    peak_rss: int
    params: list[float] | None
    detail: str


def run_approach(approach: str, path: Path, warmup: Path, home: Path, repeats: int = 1) -> Result:
    """The approach in `repeats` fresh child processes; a failure is reported in `detail`, not raised."""
    rows, p = _shape(path)
    runs, docs = [], []
    try:
        for _ in range(repeats):
            argv = python("-m", "bench.bench_exact_scale", approach, str(path), str(warmup))
            runs.append(measure(argv, bench_env(home), CHILD_TIMEOUT_S))
            docs.append(runs[-1].result())
    except RuntimeError as exc:
        return Result(rows, p, approach, float("nan"), float("nan"), 0, None, str(exc))
    return Result(rows, p, approach, statistics.median(d["seconds"] for d in docs),
                  statistics.median(m.seconds for m in runs), max(m.peak_rss for m in runs),
                  docs[-1]["params"], docs[-1]["detail"])


def measure_grid(grid: list[tuple[int, int]], home: Path, cache: Path = CACHE, smoke: bool = False) -> list[Result]:
    """Every approach at every (rows, features); repeated 3 times below 1e6 rows (1 under smoke)."""
    results = []
    for rows, p in grid:
        path, warmup = dataset(rows, p, cache), dataset(WARMUP_ROWS, p, cache)
        repeats = 1 if smoke or rows >= 10**6 else 3
        results += [run_approach(name, path, warmup, home, repeats) for name in APPROACHES]
    return results


def section(results: list[Result]) -> str:
    """The markdown table: per file, each approach's seconds, its ratio to linreg-flow's, peak RSS."""
    lines = []
    for r in results:
        base = next(b for b in results if (b.rows, b.p, b.approach) == (r.rows, r.p, BASELINE))
        lines.append([rows_name(r.rows), str(r.p), r.approach, secs(r.work_s), ratio(r.work_s / base.work_s),
                      secs(r.process_s), mib(r.peak_rss), _rel_diff(r.params, base.params), r.detail])
    return markdown_table(["rows", "features", "approach", "work s", "work ÷ linreg-flow's", "process s",
                           "peak RSS MiB", "max rel. diff vs linreg-flow", "detail"], lines)


def _rel_diff(params: list[float] | None, base: list[float] | None) -> str:
    """max |params - base| / max |base|: agreement of the intercept and coefficients."""
    if params is None or base is None:
        return ""
    return f"{max(abs(a - b) for a, b in zip(params, base)) / max(abs(b) for b in base):.1e}"


def _shape(path: Path) -> tuple[int, int]:
    import pyarrow.parquet as pq

    meta = pq.read_metadata(path)
    return meta.num_rows, meta.num_columns - 1


def child(approach: str, path: str, warmup: str | None = None) -> None:
    """Warm up on `warmup` if given, time the fit of `path`, print {"seconds", "params", "detail"} last.
    The warm-up loads what each approach loads once per process: its imports, and for linreg-flow
    the compiled kernels too (a 1e3-row warm-up runs on the numpy kernels and would leave their
    import, 0.3-0.45 s, inside the timed fit, as the other approaches' imports are not)."""
    fit = APPROACHES[approach]
    if warmup:
        fit(warmup)
        if approach == BASELINE:
            from tasks.kernels import compiled

            compiled.usable()
        if approach == "pyarrow read_table":
            fit(path)  # the first of the two reads
    start = time.perf_counter()
    params, detail = fit(path)
    print(json.dumps({"seconds": time.perf_counter() - start, "params": params, "detail": detail}))


if __name__ == "__main__":
    child(*sys.argv[1:4])
