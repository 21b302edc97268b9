"""`make bench`: every benchmark, each a ratio against a baseline run side by side."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import bench_tutorial  # noqa: E402

if __name__ == "__main__":
    bench_tutorial.main()
