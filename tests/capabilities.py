"""Print torch's CPU kernel sets (ATEN_CPU_CAPABILITY) that `make test` runs the numerically
sensitive tests under a second time: "default" and "avx2", less the one this process runs (natively,
or as ATEN_CPU_CAPABILITY asked). Vector width changes the order of torch's sums, so a result that
holds on one kernel path only fails on every machine instead of on some."""

from __future__ import annotations

import torch

OTHERS = ("default", "avx2")


def other_capabilities() -> list[str]:
    running = torch.backends.cpu.get_cpu_capability().lower()
    return [c for c in OTHERS if c != running]


if __name__ == "__main__":
    print(" ".join(other_capabilities()))
