"""The streamed exact fit on a Parquet file against plain reads and the usual in-memory fits.

Each approach runs in a child process of its own; `seconds` is its work, timed inside the child
(imports excluded), and the peak RSS is the child's own (os.wait4). The exact fit reads the file
through a ParquetTable: its column statistics (the ingest pass's, in the pipeline) are computed
first and not timed; then one TSQR pass (design_geometry) and the certified fit (fit_exact).
The file holds y and features x1..xp.

    python -m bench.bench_exact_stream FILE [FILE ...]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings

APPROACHES = ("read_table", "blocks", "exact", "lstsq", "sklearn")


def _columns(path: str) -> tuple[str, tuple[str, ...]]:
    import pyarrow.parquet as pq

    names = pq.read_schema(path).names
    return "y", tuple(n for n in names if n != "y")


def _design(path: str):
    from dataclasses import replace

    import pyarrow.parquet as pq

    from tasks.kernels.design import Design
    from tasks.kernels.table import ColumnStats, ParquetTable, stats_of

    target, features = _columns(path)
    columns = (target, *features)
    table = ParquetTable(path, columns, pq.read_metadata(path).num_rows, ColumnStats.empty(len(columns)))
    return Design(replace(table, stats=stats_of(table.blocks(), len(columns))), features, target)


def child(approach: str, path: str) -> dict:
    """Run one approach; its seconds, a detail, and the fitted parameters (intercept first)."""
    import numpy as np
    import pyarrow.parquet as pq

    target, features = _columns(path)
    if approach == "exact":
        from tasks.exact.fit import fit_exact
        from tasks.kernels.tsqr import design_geometry

        design = _design(path)
        start, cpu = time.perf_counter(), time.process_time()
        geometry = design_geometry(design)
        mid, mid_cpu = time.perf_counter(), time.process_time()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = fit_exact(design, geometry)
        end, end_cpu = time.perf_counter(), time.process_time()
        return {"seconds": end - start, "params": fit.params.tolist(),
                "detail": f"TSQR {mid - start:.2f} s (CPU {mid_cpu - cpu:.2f} s) + fit {end - mid:.2f} s "
                          f"(CPU {end_cpu - mid_cpu:.2f} s, {fit.refinement_steps} step)"}
    start = time.perf_counter()
    params = None
    if approach == "read_table":
        pq.read_table(path)
    elif approach == "blocks":  # one streamed pass of the table, no arithmetic: a pass's floor
        from tasks.kernels.table import ColumnStats, ParquetTable

        for _ in ParquetTable(path, (target, *features), 0, ColumnStats.empty(1 + len(features))).blocks():
            pass
    elif approach == "lstsq":
        table = pq.read_table(path)
        X = np.column_stack([np.ones(table.num_rows)] + [table[c].to_numpy() for c in features])
        params = np.linalg.lstsq(X, table[target].to_numpy(), rcond=None)[0].tolist()
    elif approach == "sklearn":
        import pandas as pd
        from sklearn.linear_model import LinearRegression

        frame = pd.read_parquet(path)
        model = LinearRegression().fit(frame[list(features)], frame[target])
        params = [float(model.intercept_), *map(float, model.coef_)]
    return {"seconds": time.perf_counter() - start, "params": params, "detail": ""}


def measure(approach: str, path: str) -> dict:
    """The child's result and its peak RSS in bytes."""
    proc = subprocess.Popen([sys.executable, "-m", "bench.bench_exact_stream", "--child", approach, path],
                            stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"{approach} on {path}: exit {proc.returncode}")
    return json.loads(out.strip().splitlines()[-1]) | {"peak": usage.ru_maxrss * 1024}


def main(paths: list[str]) -> None:
    import numpy as np

    for path in paths:
        results = {a: measure(a, path) for a in APPROACHES}
        base, exact = results["read_table"]["seconds"], results["exact"]
        print(f"\n{path}\n| approach | seconds | x read_table | peak RSS MiB | detail |\n| --- | ---: | ---: | ---: | --- |")
        for name, r in results.items():
            print(f"| {name} | {r['seconds']:.2f} | {r['seconds'] / base:.2f} | {r['peak'] / 2**20:.0f} | {r['detail']} |")
        print(f"sklearn / exact: {results['sklearn']['seconds'] / exact['seconds']:.2f}x")
        for other in ("lstsq", "sklearn"):
            a, b = np.array(exact["params"]), np.array(results[other]["params"])
            print(f"max relative difference exact vs {other}: {np.max(np.abs(a - b) / np.abs(a)):.2e}")


if __name__ == "__main__":
    if sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2], sys.argv[3])))
    else:
        main(sys.argv[1:])
