"""How close L-BFGS with its defaults gets to the exact fit under each of torch's CPU kernel sets
(ATEN_CPU_CAPABILITY): a figure of the machine, its vector width and its BLAS, never a test.

Each kernel set runs in a child process of its own (torch reads the variable once, at import).
Run alone: python -m bench.bench_training_paths [--smoke]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

from bench.bench_nist import NAMES, load
from bench.common import markdown_table

CAPABILITIES = ("default", "avx2", "avx512")
SMOKE_SETS, SMOKE_CAPABILITIES = ("Longley",), ("default",)


def _macrodata():
    import statsmodels.datasets.macrodata as macro

    from tasks.kernels.design import Design

    frame = macro.load_pandas().data
    names = tuple(c for c in frame.columns if c != "realgdp")
    return Design.from_arrays(frame[list(names)].to_numpy(float), frame["realgdp"].to_numpy(float), names, "realgdp")


def child(sets: list[str]) -> None:
    """One JSON line per data set: the real max relative error of L-BFGS's defaults, its estimate,
    its rounding floor, why and when it stopped; the first line names the kernel set in use."""
    import numpy as np
    import torch

    from tasks.config import TrainConfig
    from tasks.exact.fit import fit_exact
    from tasks.training.train import train_sgd

    print(json.dumps({"capability": torch.backends.cpu.get_cpu_capability().lower()}))
    for name in sets:
        design = _macrodata() if name == "macrodata" else load(name)[0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            exact = fit_exact(design)
            result = train_sgd(design, TrainConfig(optimizer="lbfgs", device="cpu"))
        error = float(np.max(np.abs(result.params - exact.params) / np.abs(exact.params)))
        print(json.dumps({"set": name, "error": error, "estimate": result.distance, "floor": result.distance_floor,
                          "stop": result.stop_reason, "epochs": result.epochs}), flush=True)


def measure(smoke: bool = False) -> dict[str, dict]:
    """capability -> {"runs": capability the child ran, set -> its line}."""
    sets = SMOKE_SETS if smoke else ("macrodata", *NAMES)
    found = {}
    for capability in SMOKE_CAPABILITIES if smoke else CAPABILITIES:
        env = dict(os.environ, ATEN_CPU_CAPABILITY=capability)
        done = subprocess.run([sys.executable, "-m", "bench.bench_training_paths", "--child", *sets], env=env,
                              capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            raise RuntimeError(f"ATEN_CPU_CAPABILITY={capability}: {done.stderr.strip().splitlines()[-1:]}")
        lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
        found[capability] = {"runs": lines[0]["capability"], **{line["set"]: line for line in lines[1:]}}
    return found


def section(found: dict[str, dict]) -> str:
    capabilities = list(found)
    sets = [k for k in found[capabilities[0]] if k != "runs"]
    headers = ["data set", *(f"{c} (runs {found[c]['runs']})" for c in capabilities), "floor"]

    def cell(line: dict) -> str:
        return f"{line['error']:.1e} ({line['stop']}, {line['epochs']})"

    rows = [[name, *(cell(found[c][name]) for c in capabilities), f"{found[capabilities[0]][name]['floor']:.1e}"]
            for name in sets]
    return markdown_table(headers, rows) + (
        "\n\nEach cell: the real max relative distance of `--optimizer lbfgs` (all else default) to the exact"
        " fit (stop reason, epochs). floor: how much of the distance estimate rounding alone produces"
        " (`distance_floor`); the stop rule's guarantee is |error - estimate| <= floor, and a \"tol\" stop"
        " within max(0.1 rtol, floor) + floor. A kernel set the CPU lacks runs the best one it has.")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2:])
    else:
        print(section(measure(smoke="--smoke" in sys.argv)))
