"""A small run's fixed cost: the same 300-row `linreg run` three times in a new PREFECT_HOME, with no
PREFECT_API_URL, once with the local server that later runs reuse (the default) and once with
Prefect's temporary server per run (LINREG_SERVER_IDLE_S=0, the behaviour before issue 15), side by
side in this one script. Prints a markdown section.

python -m bench.bench_overhead
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from bench.common import bench_env, markdown_table, measure, python, ratio, secs
from tests.prefect_server import stop_resident_servers

ROWS = 300
RUNS = 3
TIMEOUT_S = 600
MODES = {"reused local server (default)": {},
         "temporary server per run (LINREG_SERVER_IDLE_S=0)": {"LINREG_SERVER_IDLE_S": "0"}}


def table(path: Path) -> Path:
    """y ~ 1 + x1 + x2 + x3 with noise, 300 rows, seeded."""
    rng = np.random.default_rng(1)
    x = np.column_stack([rng.normal(size=ROWS), rng.uniform(0, 10, ROWS), rng.normal(5, 2, ROWS)])
    y = 1.5 + x @ np.array([2.0, -0.3, 0.7]) + rng.normal(scale=0.5, size=ROWS)
    lines = ["x1,x2,x3,y", *(",".join(f"{v:.17g}" for v in (*row, t)) for row, t in zip(x, y))]
    path.write_text("\n".join(lines) + "\n")
    return path


def runs(data: Path, folder: Path, extra: dict[str, str]) -> list[tuple[float, float]]:
    """(wall seconds, seconds of the stages in the manifest) of each run, the first on a new database."""
    env = bench_env(folder) | extra
    out = []
    try:
        for i in range(RUNS):
            argv = [*python("-m", "flows"), "run", str(data), "--artifacts-dir", str(folder / "artifacts"),
                    "--data-dir", str(folder / "data")]
            done = measure(argv, env, TIMEOUT_S)
            if done.returncode != 0:
                raise RuntimeError(f"run {i + 1} failed (exit {done.returncode}): {done.stderr.strip()[-300:]}")
            version = Path(done.stdout.strip().splitlines()[-1])
            timings = json.loads((version / "manifest.json").read_text())["timings"]
            out.append((done.seconds, sum(timings.values())))
    finally:
        stop_resident_servers(folder)
    return out


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="linreg-overhead-") as tmp:
        data = table(Path(tmp) / "h300.csv")
        measured = {mode: runs(data, Path(tmp) / f"m{i}", extra) for i, (mode, extra) in enumerate(MODES.items())}
    rows = [[mode, *(secs(wall) for wall, _ in m), secs(max(work for _, work in m))] for mode, m in measured.items()]
    reused, temporary = measured.values()
    print(markdown_table(["server", "first run s (new database)", "second s", "third s", "stages s (max)"], rows))
    print(f"\nSecond run, temporary ÷ reused: {ratio(temporary[1][0] / reused[1][0])}. "
          f"Second run less its stages, reused: {secs(reused[1][0] - reused[1][1])} s.")


if __name__ == "__main__":
    main()
