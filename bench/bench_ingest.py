"""The ingest pass (read, check, hash, store, statistics and Gram sums) in one piece on this machine,
against the same pass in parts on a two-worker LocalCluster (what `linreg run --dask` does), side by
side in one child process per size; the cluster's start is outside the timed work.

python -m bench.bench_ingest [--smoke]   prints markdown (issue 19's ingest on the cluster)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from bench.common import CACHE, bench_env, dataset, markdown_table, measure, mib, python, ratio, rows_name, secs

SIZES = [(10**6, 8), (10**7, 16)]
SMOKE_SIZES = [(2 * 10**5, 4)]
CHILD = """
import json, resource, shutil, sys, tempfile, time
from pathlib import Path
import distributed
from flows.dask import client_map
from functools import partial
from tasks.config import ModelSpec
from tasks.ingest.prepare import prepare_data
from tasks.kernels.passes import Passes

path, p = Path(sys.argv[1]), int(sys.argv[2])
spec = ModelSpec(target="y", features=tuple(f"x{i}" for i in range(1, p + 1)))
out = {}
with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
    start = time.perf_counter()
    one = prepare_data(spec, path, Path(tmp) / "one")
    out["one_s"] = time.perf_counter() - start
    out["one_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    start = time.perf_counter()
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as lc, \\
            distributed.Client(lc) as client:
        out["start_s"] = time.perf_counter() - start
        passes = Passes(partial(client_map, client), 4)
        start = time.perf_counter()
        parted = prepare_data(spec, path, Path(tmp) / "parts", passes=passes)
        out["parts_s"] = time.perf_counter() - start
        out["parts"] = parted.parts
        out["worker_rss"] = max(client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss).values()) * 1024
    out["same_hash"] = one.sha256 == parted.sha256
print(json.dumps(out))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    rows_out = []
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as home:
        for rows, p in SMOKE_SIZES if args.smoke else SIZES:
            path = dataset(rows, p, CACHE)
            done = measure(python("-c", CHILD, str(path), str(p)), bench_env(Path(home)), 3600.0)
            if done.returncode != 0:
                tail = (done.stderr.strip().splitlines() or [""])[-1]
                rows_out.append([f"{rows_name(rows)} x {p}", f"failed: {tail}", "", "", "", "", "", ""])
                continue
            r = json.loads(done.stdout.strip().splitlines()[-1])
            rows_out.append([f"{rows_name(rows)} x {p}", secs(r["one_s"]), secs(r["parts_s"]), str(r["parts"]),
                             ratio(r["parts_s"] / r["one_s"]), secs(r["start_s"]), mib(r["worker_rss"]),
                             "yes" if r["same_hash"] else "**no**"])
    print(markdown_table(["table", "one piece, s", "4 parts on 2 workers, s", "parts", "parts ÷ one piece",
                          "cluster start, s", "worker peak RSS", "same sha256"], rows_out))


if __name__ == "__main__":
    sys.exit(main())
