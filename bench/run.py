"""`make bench`: every benchmark, each against a baseline run side by side in the same process."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import bench_exact, bench_nist, bench_tutorial  # noqa: E402

if __name__ == "__main__":
    print("## NIST StRD, minimum LRE (digits) per dataset\n")
    bench_nist.main()
    print("\n## Speed\n")
    bench_tutorial.main()
    bench_exact.main()
