"""A whole `linreg run` against a running Prefect server: its essential work, Prefect's share, plots' share.

The essential work is the manifest's `timings` (seconds per stage, measured inside the flow); the
rest of the run's wall time is start-up, imports, Prefect's orchestration and whatever the stages
do not cover. The baseline is the whole pandas + scikit-learn process on the same file.
"""

from __future__ import annotations

import json
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.bench_exact_scale import CHILD_TIMEOUT_S
from bench.common import (CACHE, ROOT, Measured, bench_env, dataset, markdown_table, measure, mib, python, ratio,
                          rows_name, secs)
from tests.prefect_server import prefect_server

SIZES = [(10**6, 8), (10**7, 16)]
RUN_OPTIONS = ["--epochs", "1", "--batch-size", "65536"]
# What each side imports before its first line of work.
LINREG_IMPORTS = "import flows.cli, flows.regression, matplotlib.pyplot"
SKLEARN_IMPORTS = "import pandas, sklearn.linear_model"


@dataclass(frozen=True)
class RunResult:
    """One size: the whole run and its manifest timings, and the pandas + scikit-learn process."""

    rows: int
    p: int
    run: Measured
    timings: dict[str, float]
    sklearn: Measured



def critical_path(timings: dict[str, float]) -> float:
    """Seconds of the stages as the flow orders them: the exact fit and the training run side by
    side, so together they take the longer of the two."""
    side_by_side = max(timings.get("exact", 0.0), timings.get("sgd", 0.0))
    return side_by_side + sum(v for k, v in timings.items() if k not in ("exact", "sgd"))


def whole_run(data: Path, env: dict[str, str], work: Path) -> tuple[Measured, dict[str, float]]:
    """`linreg run DATA` with fresh artifacts and data folders: the process and the manifest's timings."""
    folder = Path(tempfile.mkdtemp(dir=work))
    argv = [*python("-m", "flows"), "run", str(data), "--artifacts-dir", str(folder / "artifacts"),
            "--data-dir", str(folder / "data"), *RUN_OPTIONS]
    run = measure(argv, env, CHILD_TIMEOUT_S)
    if run.returncode != 0:
        last = (run.stderr.strip().splitlines() or [""])[-1][:500]
        raise RuntimeError(f"linreg run {data.name} failed (exit {run.returncode}): {last}")
    version = Path(run.stdout.strip().splitlines()[-1])
    return run, json.loads((version / "manifest.json").read_text())["timings"]


def measure_runs(sizes: list[tuple[int, int]], home: Path, cache: Path = CACHE) -> tuple[list[RunResult], dict]:
    """Each size's whole run against one server started here (after a warm-up run on the seed data),
    and the import times of both sides."""
    env = bench_env(home)
    imports = {side: statistics.median(measure(python("-c", code), env, CHILD_TIMEOUT_S).seconds for _ in range(3))
               for side, code in (("linreg", LINREG_IMPORTS), ("sklearn", SKLEARN_IMPORTS))}
    results = []
    with prefect_server(home / "server") as url:
        run_env = env | {"PREFECT_API_URL": url}
        whole_run(ROOT / "data" / "seed.csv", run_env, home)  # the server's first flow run registers the flow
        for rows, p in sizes:
            path = dataset(rows, p, cache)
            run, timings = whole_run(path, run_env, home)
            sklearn = measure(python("-m", "bench.bench_exact_scale", "pandas + scikit-learn", str(path)), env,
                              CHILD_TIMEOUT_S)
            sklearn.result()  # raises if the baseline failed
            results.append(RunResult(rows, p, run, timings, sklearn))
    return results, imports


def less_imports(r: RunResult, imports: dict[str, float]) -> float:
    """(run - its imports) / (pandas + scikit-learn - theirs); nan where noise leaves nothing to divide by."""
    base = r.sklearn.seconds - imports["sklearn"]
    return (r.run.seconds - imports["linreg"]) / base if base > 0 else float("nan")


def section(results: list[RunResult], imports: dict[str, float]) -> str:
    """Two tables: the run against pandas + scikit-learn, and where the run's time goes."""
    versus = markdown_table(
        ["data", "features", "linreg run s", "peak RSS MiB", "pandas + scikit-learn s", "peak RSS MiB",
         "run ÷ pandas + scikit-learn", "same, both less their imports"],
        [[rows_name(r.rows), str(r.p), secs(r.run.seconds), mib(r.run.peak_rss), secs(r.sklearn.seconds),
          mib(r.sklearn.peak_rss), ratio(r.run.seconds / r.sklearn.seconds),
          ratio(less_imports(r, imports))] for r in results])
    stages = list(dict.fromkeys(k for r in results for k in r.timings))
    header = ["stage"] + [h for r in results for h in (f"{rows_name(r.rows)} x {r.p} s", "% of run")]

    def line(name: str, values: list[float]) -> list[str]:
        return [name] + [c for r, v in zip(results, values) for c in (secs(v), f"{100 * v / r.run.seconds:.1f}")]

    essential = [critical_path(r.timings) for r in results]
    shares = markdown_table(header, [
        *(line(k, [r.timings.get(k, 0.0) for r in results]) for k in stages),
        line("essential work (the stages in order; exact and sgd side by side count once, the longer)", essential),
        line("Prefect and the rest (run - essential work)", [r.run.seconds - e for r, e in zip(results, essential)]),
        line("of which the imports, measured alone", [imports["linreg"]] * len(results)),
        line("whole `linreg run`", [r.run.seconds for r in results]),
    ])
    return (f"Imports alone (a process doing nothing else): linreg-flow's `{LINREG_IMPORTS}` "
            f"{secs(imports['linreg'])} s; `{SKLEARN_IMPORTS}` {secs(imports['sklearn'])} s. "
            f"Options: `{' '.join(RUN_OPTIONS)}`.\n\n{versus}\n\n"
            "Where the run's time goes (manifest `timings`):\n\n"
            f"{shares}")
