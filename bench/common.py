"""What every benchmark shares: a child process measured from outside, cached data, the machine.

Each approach runs in a process of its own so that its peak RSS is its own: the parent reaps the
child with os.wait4, whose rusage carries the child's ru_maxrss (KiB on Linux).
"""

from __future__ import annotations

import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CACHE = ROOT / "bench" / ".cache"
# Rows per row group, as the pipeline reads them (tasks.kernels.table.BLOCK_ROWS).
ROW_GROUP = 65536
PACKAGES = ("numpy", "pyarrow", "pandas", "torch", "scikit-learn", "statsmodels", "prefect", "matplotlib")


@dataclass(frozen=True)
class Measured:
    """One child process: wall seconds from start to exit (imports included), peak RSS in bytes."""

    seconds: float
    peak_rss: int
    returncode: int
    stdout: str
    stderr: str

    def result(self) -> dict:
        """The JSON document a benchmark child prints as its last stdout line."""
        if self.returncode == -signal.SIGKILL:
            raise RuntimeError(f"killed after {self.seconds:.0f} s (time limit, or out of memory)")
        if self.returncode != 0:
            tail = self.stderr.strip().splitlines()[-1:] or [f"exit {self.returncode}"]
            raise RuntimeError(f"child failed (exit {self.returncode}): {tail[0]}")
        return json.loads(self.stdout.strip().splitlines()[-1])


def bench_env(home: Path) -> dict[str, str]:
    """The environment of a child: Prefect and matplotlib state under `home`, no analytics."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=str(home / "prefect"), MPLCONFIGDIR=str(home / "mpl"), MPLBACKEND="Agg",
               PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1", PYTHONUNBUFFERED="1")
    return env


def measure(argv: list[str], env: dict[str, str], timeout: float) -> Measured:
    """Run argv in the repository root in a session of its own; on timeout, SIGKILL that session."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile(prefix="peak-") as peak:
        env = dict(env, BENCH_PEAK_FILE=peak.name)  # written by bench/peak.py when argv is python(...)
        start = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=err, start_new_session=True)
        timer = threading.Timer(timeout, _kill_session, (proc.pid,))
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:  # e.g. Ctrl-C: leave no child running
            _kill_session(proc.pid)
            proc.wait()
            raise
        finally:
            timer.cancel()
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
        out.seek(0)
        err.seek(0)
        reported = Path(peak.name).read_text(encoding="ascii").strip()
        # ru_maxrss only when the child could not say (killed; not run through python()): it
        # includes the parent's size at spawn (see bench/peak.py).
        peak_rss = int(reported) if reported else usage.ru_maxrss * 1024
        return Measured(seconds, peak_rss, proc.returncode,
                        out.read().decode(errors="replace"), err.read().decode(errors="replace"))


def _kill_session(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def python(*args: str) -> list[str]:
    """argv of this interpreter (the project's venv) running args, through bench/peak.py so that
    measure() gets the child's own peak RSS."""
    return [sys.executable, "-m", "bench.peak", *args]


def rows_name(rows: int) -> str:
    """1000000 -> '1e6' (powers of ten), else the digits."""
    exp = round(math.log10(rows)) if rows > 0 else 0
    return f"1e{exp}" if 10**exp == rows else str(rows)


def dataset(rows: int, p: int, cache: Path = CACHE) -> Path:
    """cache/d{rows}x{p}.parquet, written once: y = 3 + X b + N(0, 1), b = linspace(-2, 2, p),
    column j of X ~ N(j, (j + 1)^2), float64 columns y, x1..xp in row groups of ROW_GROUP rows.
    The same recipe as the shared 1e6 x 8 and 1e7 x 16 files: link those into the cache to reuse them."""
    # Imported here: the children import this module too, and each loads only its own libraries.
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = cache / f"d{rows_name(rows)}x{p}.parquet"
    if path.exists():
        return path
    cache.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(42)
    b = np.linspace(-2, 2, p)
    schema = pa.schema([("y", pa.float64())] + [(f"x{j + 1}", pa.float64()) for j in range(p)])
    # Written under a temporary name and renamed: an interrupted bench never leaves a torn file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with pq.ParquetWriter(tmp, schema) as writer:
            for a in range(0, rows, 1_000_000):
                m = min(1_000_000, rows - a)
                X = rng.normal(size=(m, p)) * np.arange(1, p + 1) + np.arange(p)
                y = 3 + X @ b + rng.normal(size=m)
                writer.write_table(pa.table([y, *X.T], schema=schema), row_group_size=ROW_GROUP)
        tmp.rename(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def machine() -> str:
    """A markdown list: CPU, cores, memory, Python and the libraries' versions, date, commit."""
    cpu = next((line.split(":", 1)[1].strip() for line in _read("/proc/cpuinfo").splitlines()
                if line.startswith("model name")), platform.processor() or "unknown")
    mem_kib = next((int(line.split()[1]) for line in _read("/proc/meminfo").splitlines()
                    if line.startswith("MemTotal:")), 0)
    versions = ", ".join(f"{name} {_version(name)}" for name in PACKAGES)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip() or "unknown"
    return "\n".join([
        f"- CPU: {cpu}; {len(os.sched_getaffinity(0))} cores usable of {os.cpu_count()}",
        f"- memory: {mem_kib / 2**20:.1f} GiB; load average before the run: {os.getloadavg()[0]:.2f}",
        f"- Python {platform.python_version()} on {platform.system()} {platform.release()}",
        f"- {versions}",
        f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}; commit {commit}",
    ])


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "absent"


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    """A markdown table; a column of numbers (or blanks) is right-aligned."""
    align = [":---" if any(r[j] and not _is_number(r[j]) for r in rows) else "---:" for j in range(len(headers))]
    return "\n".join("| " + " | ".join(r) + " |" for r in [headers, align, *rows])


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return cell == "n/a"
    return True


def secs(value: float) -> str:
    if not math.isfinite(value):
        return "n/a"
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def mib(value: int) -> str:
    """Bytes in MiB; 0 (nothing measured) is n/a."""
    return f"{value / 2**20:.0f}" if value else "n/a"


def ratio(value: float) -> str:
    """Two decimals; two significant digits below 0.1 (a microsecond read of a tiny file is not 0.00)."""
    if not math.isfinite(value):
        return "n/a"
    return f"{value:.2f}" if abs(value) >= 0.1 or value == 0 else f"{value:.2g}"
