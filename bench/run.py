"""`make bench`: bench/RESULTS.md, every ratio measured in this one run, each approach in its own process.

python bench/run.py [--smoke] [--out FILE] [--cache DIR]
--smoke: the same tables at tiny sizes and no server, in seconds: CI's check that the bench runs.
"""

from __future__ import annotations

import argparse
import math
import operator
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import bench_exact_scale, bench_run  # noqa: E402
from bench.common import CACHE, ROOT, bench_env, machine, markdown_table, measure, python, ratio  # noqa: E402

GiB = 2**30
COMPARE = {"<=": operator.le, "<": operator.lt, ">=": operator.ge}


def included(module: str, args: list[str], home: Path, timeout: float) -> str:
    """The stdout of `python -m bench.MODULE ARGS` (a benchmark that prints its own markdown)."""
    done = measure(python("-m", f"bench.{module}", *args), bench_env(home), timeout)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or [""])[-1]
        return f"**{module} failed** (exit {done.returncode} after {done.seconds:.0f} s): {tail}"
    return done.stdout.strip()


def goals(exact: list[bench_exact_scale.Result], runs: list[bench_run.RunResult],
          imports: dict[str, float]) -> str:
    """Issue 8's measurable goals at the sizes it names, from the tables below."""
    def fit(rows: int, p: int, approach: str) -> bench_exact_scale.Result | None:
        return next((r for r in exact if (r.rows, r.p, r.approach) == (rows, p, approach)
                     and math.isfinite(r.work_s)), None)

    def run(rows: int, p: int) -> bench_run.RunResult | None:
        return next((r for r in runs if (r.rows, r.p) == (rows, p)), None)

    big, mid = (10**7, 16), (10**6, 8)
    ours, sk, arrow = (fit(*big, a) for a in (bench_exact_scale.BASELINE, "pandas + scikit-learn",
                                              "pyarrow read_table"))
    r_big, r_mid = run(*big), run(*mid)
    rows = [
        ("1: whole run ÷ pandas + scikit-learn, 1e7 x 16", r_big and r_big.run.seconds / r_big.sklearn.seconds,
         "<=", 2),
        ("1: the same less imports, 1e6 x 8", r_mid and bench_run.less_imports(r_mid, imports), "<=", 2),
        ("2: exact fit peak RSS GiB, 1e7 x 16", ours and ours.peak_rss / GiB, "<", 1),
        ("2: whole run peak RSS GiB, 1e7 x 16", r_big and r_big.run.peak_rss / GiB, "<", 1.5),
        ("4: pandas + scikit-learn ÷ exact fit, 1e7 x 16", ours and sk and sk.work_s / ours.work_s, ">=", 5),
        ("4: exact fit ÷ read_table, 1e7 x 16", ours and arrow and ours.work_s / arrow.work_s, "<=", 3),
    ]
    checks = markdown_table(["goal", "measured", "target", "met"],
                            [[goal, "not measured" if v is None else ratio(v), f"{op} {bound:g}",
                              "" if v is None else ("yes" if COMPARE[op](v, bound) else "**no**")]
                             for goal, v, op, bound in rows])
    return (f"{checks}\n\nGoal 3 (the NIST floors with blocks of 3 rows): table (d). "
            "Goal 5 (tutorial mode >= 20x the tutorial's loop): table (a).")


def goals_18(exact: list[bench_exact_scale.Result], runs: list[bench_run.RunResult]) -> str:
    """Issue 18's measurable goals, from tables (b) and (c): the certified fit against a read and
    against scikit-learn at three sizes, and the whole run against the pandas + scikit-learn process."""
    def work(rows: int, p: int, approach: str) -> float | None:
        found = next((r for r in exact if (r.rows, r.p, r.approach) == (rows, p, approach)
                      and math.isfinite(r.work_s)), None)
        return found and found.work_s

    rows = []
    for size, name in (((10**7, 16), "1e7 x 16"), ((10**6, 8), "1e6 x 8"), ((10**5, 4), "1e5 x 4")):
        ours, sk, arrow = (work(*size, a) for a in (bench_exact_scale.BASELINE, "pandas + scikit-learn",
                                                     "pyarrow read_table"))
        rows += [(f"exact fit ÷ the second read_table, {name}", ours and arrow and ours / arrow, "<=", 3),
                 (f"pandas + scikit-learn ÷ exact fit, {name}", ours and sk and sk / ours, ">=", 5)]
    for size, name, bound in (((10**7, 16), "1e7 x 16", 1), ((10**6, 8), "1e6 x 8", 2.5)):
        found = next((r for r in runs if (r.rows, r.p) == size), None)
        rows.append((f"whole run ÷ pandas + scikit-learn process, {name}",
                     found and found.run.seconds / found.sklearn.seconds, "<=", bound))
    big = next((r for r in runs if (r.rows, r.p) == (10**7, 16)), None)
    rows.append(("whole run peak RSS GiB, 1e7 x 16", big and big.run.peak_rss / GiB, "<", 1))
    return markdown_table(["goal", "measured", "target", "met"],
                          [[goal, "not measured" if v is None else ratio(v), f"{op} {bound:g}",
                            "" if v is None else ("yes" if COMPARE[op](v, bound) else "**no**")]
                           for goal, v, op, bound in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, no server, seconds")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "RESULTS.md")
    parser.add_argument("--cache", type=Path, default=CACHE, help="where generated data files are kept")
    args = parser.parse_args()
    start = time.perf_counter()
    timeout = 120.0 if args.smoke else 3600.0
    with tempfile.TemporaryDirectory(prefix="linreg-bench-") as tmp:
        home = Path(tmp)
        say("(a) training")
        tutorial = included("bench_tutorial", ["--smoke"] if args.smoke else [], home, timeout)
        say("(b) exact fit")
        grid = bench_exact_scale.SMOKE_GRID if args.smoke else bench_exact_scale.FULL_GRID
        exact = bench_exact_scale.measure_grid(grid, home, args.cache, smoke=args.smoke)
        runs, imports = [], {}
        whole_runs = "Not run under --smoke: it needs a running Prefect server (`make bench` starts one)."
        if not args.smoke:
            say("(c) whole runs")
            try:
                runs, imports = bench_run.measure_runs(bench_run.SIZES, home, args.cache)
                whole_runs = bench_run.section(runs, imports)
            except RuntimeError as exc:
                whole_runs = f"**failed**: {exc}"
        say("(d) accuracy")
        nist = included("bench_nist", [], home, timeout)
        say("(e) training under each torch CPU kernel set")
        paths = included("bench_training_paths", ["--smoke"] if args.smoke else [], home, timeout)
        overhead = "Not run under --smoke: it starts six Prefect servers."
        if not args.smoke:
            say("(f) a small run's fixed cost")
            overhead = included("bench_overhead", [], home, timeout)
        formula = "Not run under --smoke: it needs a running Prefect server."
        if not args.smoke:
            say("(g) a formula model against statsmodels' formula API")
            formula = included("bench_formula", [], home, timeout)
        say("(h) the ingest in parts on a local Dask cluster")
        ingest = included("bench_ingest", ["--smoke"] if args.smoke else [], home, timeout)
    mode = "`bench/run.py --smoke`: tiny sizes, a check that the bench runs, not a measurement" if args.smoke \
        else "`make bench` (bench/run.py)"
    args.out.write_text(f"""# linreg-flow benchmarks

{mode}. Every ratio compares numbers measured in this one run, on this machine; each approach runs
in a fresh process of its own, so its peak RSS is its own. Absolute seconds are noisy; ratios less so.

## Machine

{machine()}

## Goals of issue 8

{goals(exact, runs, imports)}

## Goals of issue 18

{goals_18(exact, runs)}

## (a) Training: the tutorial's loop, tutorial mode, default mode

{tutorial}

## (b) Exact fit, file to coefficients

Each approach reads the same Parquet file (y, x1..xp, row groups of 65536 rows) and fits
y ~ 1 + x1 + ... + xp. work: timed inside the child after a warm-up fit of a 1e3-row file with the
same columns (which loads each approach's libraries; for linreg-flow its compiled kernels too, and
for read_table a first read of the file itself: the row is the second read in the process, as issue
18 defines it); process: the child's whole life, imports and warm-up included. linreg-flow's exact
fit is certified: a statistics-and-Gram pass (the ingest's; a TSQR pass only where the Gram is not
enough), a compensated refinement pass, standard errors.

{bench_exact_scale.section(exact)}

## (c) A whole `linreg run` against a running Prefect server

{whole_runs}

## (d) Accuracy: NIST StRD, minimum LRE (correct digits, 15 = all)

{nist}

## (e) Training's reach under each torch CPU kernel set (ATEN_CPU_CAPABILITY)

{paths}

## (f) A small run's fixed cost: the reused local server against a temporary server per run

{overhead}

## (g) A formula model with text categoricals against statsmodels' formula API

{formula}

## (h) The ingest in one piece against its parts on a two-worker local Dask cluster (`--dask`)

Both in one child process per size, side by side: `prepare_data` reads, checks, hashes and stores
the table, then the same in parts on a `LocalCluster` of two single-thread worker processes (the
cluster's start is outside the timed work and shown on its own). On a 2-core machine both workers
share its two cores: this measures the parts' overhead, not the speed-up of more machines.

{ingest}

Total bench time: {time.perf_counter() - start:.0f} s.
""")
    say(f"wrote {args.out}")


def say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
