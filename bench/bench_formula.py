"""A formula model on a table with text categoricals: the whole `linreg run --formula` against a
running Prefect server, next to the same fit in statsmodels' formula API as a whole process
(pandas reads the same Parquet file, smf.ols(...).fit()), each in a fresh process of its own.

python -m bench.bench_formula [--smoke] [--rows N]...   prints markdown (issue 17's speed and memory)
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from bench.common import CACHE, ROW_GROUP, bench_env, markdown_table, measure, mib, python, ratio, rows_name, secs

FORMULA = "y ~ x1 + x2 + x3 + C(g50) + x1:C(g5)"
RUN_OPTIONS = ["--epochs", "1", "--batch-size", "65536"]
STATSMODELS = """
import sys, pandas as pd, statsmodels.formula.api as smf
df = pd.read_parquet(sys.argv[1])
res = smf.ols(sys.argv[2], df).fit()
print(len(res.params))
"""
TIMEOUT_S = 3600.0
# statsmodels holds the whole design in memory (2.1 GiB at 1e6 rows): above this it is not run (1e7
# would need about 21 GiB of this machine's 24); linreg streams the larger tables alone.
STATSMODELS_MAX_ROWS = 10**6


def table(rows: int, cache: Path = CACHE) -> Path:
    """cache/f{rows}.parquet, written once: x1..x3 normal, g50 and g5 text columns of 50 and 5 levels,
    y = 1 + x b + level effects + x1 * g5 effect + N(0, 1), in row groups."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = cache / f"f{rows_name(rows)}.parquet"
    if path.exists():
        return path
    cache.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(17)
    g50, g5 = np.array([f"store {i:02d}" for i in range(50)]), np.array(list("ABCDE"))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with pq.ParquetWriter(tmp, pa.schema([("y", pa.float64()), ("x1", pa.float64()), ("x2", pa.float64()),
                                          ("x3", pa.float64()), ("g50", pa.string()), ("g5", pa.string())])) as out:
        for a in range(0, rows, 1_000_000):
            m = min(1_000_000, rows - a)
            X = rng.normal(size=(m, 3))
            i50, i5 = rng.integers(0, 50, m), rng.integers(0, 5, m)
            y = 1 + X @ [0.5, -1.0, 2.0] + i50 * 0.01 + X[:, 0] * i5 * 0.2 + rng.normal(size=m)
            out.write_table(pa.table({"y": y, "x1": X[:, 0], "x2": X[:, 1], "x3": X[:, 2], "g50": g50[i50],
                                      "g5": g5[i5]}), row_group_size=ROW_GROUP)
    tmp.rename(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--smoke", action="store_true", help="10^4 rows, a check that the bench runs")
    parser.add_argument("--rows", type=int, action="append", help="table sizes (default 10^6)")
    args = parser.parse_args()
    sizes = [10**4] if args.smoke else (args.rows or [10**6, 10**7])
    from tests.prefect_server import prefect_server

    rows_out = []
    with tempfile.TemporaryDirectory(prefix="bench-formula-") as tmp:
        home = Path(tmp)
        env = bench_env(home)
        with prefect_server(home / "server") as url:
            run_env = env | {"PREFECT_API_URL": url}
            for rows in sizes:
                data = table(rows)
                runs = []
                for k in range(1 if rows_out else 2):  # the first registers the flow on the server
                    folder = home / f"{rows}-{k}"
                    run = measure([*python("-m", "flows"), "run", str(data), "--formula", FORMULA, "--artifacts-dir",
                                   str(folder / "artifacts"), "--data-dir", str(folder / "data"), *RUN_OPTIONS],
                                  run_env, TIMEOUT_S)
                    if run.returncode:
                        raise SystemExit(f"linreg run failed: {run.stderr.strip().splitlines()[-1:]}")
                    runs.append(run)
                version = Path(runs[-1].stdout.strip().splitlines()[-1])
                timings = json.loads((version / "manifest.json").read_text())["timings"]
                run = runs[-1]
                measured = [rows_name(rows), secs(run.seconds), mib(run.peak_rss), secs(sum(timings.values()))]
                if rows > STATSMODELS_MAX_ROWS:
                    rows_out.append(measured + ["not run (about 21 GiB)", "", "", ""])
                    continue
                sm = measure(python("-c", STATSMODELS, str(data), FORMULA), env, TIMEOUT_S)
                if sm.returncode:
                    raise SystemExit(f"statsmodels failed: {sm.stderr.strip().splitlines()[-1:]}")
                rows_out.append(measured + [secs(sm.seconds), mib(sm.peak_rss), ratio(run.seconds / sm.seconds),
                                            ratio(run.peak_rss / sm.peak_rss)])
    print(f"`{FORMULA}` on a Parquet table (x1..x3 normal, g50 and g5 text columns of 50 and 5 levels); "
          f"linreg runs `{' '.join(RUN_OPTIONS)}` against a running server (the second of two runs); "
          "statsmodels is pandas.read_parquet + smf.ols(...).fit() as a whole process. Issue 17's goals: "
          "time ÷ statsmodels <= 1 and peak RSS ÷ statsmodels < 1/3 at 1e6 rows; peak RSS under 1.5 GiB at 1e7.\n")
    print(markdown_table(["rows", "linreg run", "its peak RSS", "its stages", "statsmodels process", "its peak RSS",
                          "time ÷ statsmodels", "peak RSS ÷ statsmodels"], rows_out))


if __name__ == "__main__":
    main()
