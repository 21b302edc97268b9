"""Run a Python program (`-c CODE`, `-m MODULE` or a script, with its arguments) and write its own
peak RSS, in bytes, to the file named by BENCH_PEAK_FILE when it exits.

Why not the rusage of wait4: Linux carries the high-water RSS of the memory map a process had
before exec into its ru_maxrss, and subprocess starts children with vfork, so every child of a big
parent (pytest, 500 MB) reported at least the parent's size. VmHWM in /proc/self/status is the
high-water mark of this process's own memory map, which exec creates fresh.
"""

from __future__ import annotations

import atexit
import os
import runpy
import sys


def _report() -> None:
    path = os.environ.get("BENCH_PEAK_FILE")
    if not path:
        return
    with open("/proc/self/status", encoding="ascii") as status:
        kib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    with open(path, "w", encoding="ascii") as out:
        out.write(str(kib * 1024))


def main() -> None:
    atexit.register(_report)
    kind, target, *rest = sys.argv[1:]
    if kind == "-c":
        sys.argv = ["-c", *rest]
        exec(compile(target, "<string>", "exec"), {"__name__": "__main__"})
    elif kind == "-m":
        sys.argv = [target, *rest]
        runpy.run_module(target, run_name="__main__", alter_sys=True)
    else:
        sys.argv = [kind, target, *rest]
        runpy.run_path(kind, run_name="__main__")


if __name__ == "__main__":
    main()
