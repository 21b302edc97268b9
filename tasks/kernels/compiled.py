"""Compiled kernels (numba): error-free transforms and the refinement pass's sums, fused, in one sweep
over a block's rows (kernels/numba_kernels.py).

TwoSum (Knuth) and TwoProduct (one multiply and one fused multiply-add: llvm.fma, since numba has no
math.fma) give a + b and a * b exactly as s + e. Compiled without fastmath: LLVM then keeps every
operation as written (fastmath would reassociate the error terms away). With them, one sweep forms
each row's residual r = y - X beta in double-double (Ogita, Rump and Oishi's Dot2: the products'
exact high parts summed by TwoSum, every low part in float64) and accumulates sum r^2, sum d, sum d^2
(d = y - center) and X^T r, each as Dot2 sums over chunks of 1024 rows whose double-double results
are then added in row order: the error of each sum is at most about (2048 u)^2 of the sum of its
terms' sizes, far below the float64 resolution the refinement needs. The numpy kernels
(kernels/refine.py, kernels/ddarith.py) compute the same sums with 40 array temporaries per value;
these read each value once. Every kernel releases the GIL (nogil) and is cached on disk
(cache=True): the compile is paid once per machine (`make install` pays it), never by a run.

numba is imported only when a pass over at least MIN_ROWS rows asks for it (the import costs about
0.3 s, more than a small fit); usable() says whether it runs here, and where it does not (not
installed, or no working compiler path) the numpy kernels run and the log says so once.
"""

from __future__ import annotations

import logging
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType

import numpy as np

# Passes over fewer rows run on the numpy kernels: there the import and the first call of the
# compiled ones (0.6 s) cost more than they save.
MIN_ROWS = 1 << 16

_state: dict = {}  # "module" (the kernels, or None) and "why" (the reason they do not run)
_lock = threading.Lock()  # one import and check, whichever thread asks first


def _kernels() -> ModuleType | None:
    """The compiled kernels' module, checked once per process, or None."""
    with _lock:
        return _load()


def _load() -> ModuleType | None:
    if "module" not in _state:
        module, why = None, ""
        try:
            from tasks.kernels import numba_kernels as module
        except ImportError as error:
            why = f"numba is not installed ({error})"
        else:
            try:
                hi, _ = module.refine_sums(np.ones((2, 1)), np.array([3.0, 3.0]), np.ones(1), np.zeros(1), 1.0, 0.0,
                                           True, 0.0, False, True)
                if not (hi[module.GRADIENT] == 2.0 and hi[module.RSS] == 2.0):
                    module, why = None, "the compiled kernels gave a wrong answer"
                else:
                    _warm(module)  # every version the passes call, loaded now: not on a pass's first call
            except Exception as error:  # noqa: BLE001 - a broken compiler path of any kind
                module, why = None, f"numba cannot compile here ({type(error).__name__}: {error})"
        if module is None:
            logging.getLogger("linreg_flow").warning("%s: the numpy kernels run instead (slower, as accurate)", why)
        _state.update(module=module, why=why)
    return _state["module"]


def preload() -> None:
    """Import and check the kernels on a thread of their own, once: a pass that knows a later pass
    will want them (an ingest pass past MIN_ROWS rows) calls this, so that numba's import (0.3-0.45 s,
    mostly loading LLVM and the cached machine code) overlaps its decoding and Prefect's start-up
    instead of landing on the fit. A caller of usable() meanwhile waits for it on the lock."""
    if "module" in _state or _state.get("preloading"):
        return
    _state["preloading"] = True
    # Not a daemon: an interpreter that exits meanwhile waits for the import instead of tearing LLVM down under it.
    threading.Thread(target=_kernels, name="linreg-numba-preload").start()


def helper_thread() -> ThreadPoolExecutor:
    """The thread that sweeps the first half of each block while the caller sweeps the second (the
    kernels release the GIL): both cores on one pass. The halves' sums are added in row order, so
    the result is the same on one core or many."""
    with _lock:
        if "helper" not in _state:
            _state["helper"] = ThreadPoolExecutor(max_workers=1, thread_name_prefix="linreg-sweep")
        return _state["helper"]


def in_halves(sweep, X: np.ndarray, y: np.ndarray, align: int = 1) -> tuple:
    """(sweep(first half), sweep(second half)) of a block's rows X, y, the first half on
    helper_thread() while this thread sweeps the second: both cores on one pass. The cut is at a
    multiple of `align` rows, so that the halves' sums added in row order are the same on any machine."""
    half = (len(y) // 2 + align - 1) // align * align
    first = helper_thread().submit(sweep, X[:half], y[:half])
    second = sweep(X[half:], y[half:])
    return first.result(), second


def usable(rows: int | None = None) -> bool:
    """Whether a pass over `rows` rows (None: any) runs on the compiled kernels."""
    if rows is not None and rows < MIN_ROWS:
        return False
    return _kernels() is not None


def __getattr__(name: str):
    """The kernels (refine_sums, training_sums, error_free, two_sum, two_prod), AVAILABLE and WHY, on first use."""
    if name in ("AVAILABLE", "WHY"):
        module = _kernels()
        return module is not None if name == "AVAILABLE" else _state["why"]
    if name in ("refine_sums", "training_sums", "error_free", "two_sum", "two_prod", "CHUNK"):
        module = _kernels()
        if module is None:
            raise AttributeError(f"{name}: {_state['why']}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def warm() -> None:
    """Compile every kernel for the array layouts the passes use (cache=True keeps them on disk):
    `make install` calls it, so that no run pays the compile."""
    _kernels()  # which warms them


def _warm(module: ModuleType) -> None:
    """Call every kernel once for each array layout and flag set the passes use: numba compiles (or
    loads from its disk cache, 1-10 ms each) one machine-code version per argument types on its first
    call, which then lands here, where the kernels are first loaded (a thread of its own in a run:
    preload), not on a pass."""
    X = np.ones((4, 2))
    for layout in (X, np.asfortranarray(X), X[:, :1]):
        for flags in ((True, True), (False, False)):
            module.refine_sums(layout, np.ones(4), np.ones(layout.shape[1]), np.zeros(layout.shape[1]), 0.0, 0.0,
                               flags[0], 0.0, flags[1], flags[1])
        for flag in (True, False):
            module.training_sums(layout, np.ones(4), np.zeros(layout.shape[1]), np.ones(layout.shape[1]), 0.0, 1.0,
                                 np.ones(layout.shape[1] + int(flag)), flag, np.eye(layout.shape[1] + int(flag)), flag)
    module.error_free(np.ones(2), np.ones(2))


if __name__ == "__main__":
    warm()
    print("compiled kernels:", "ready" if usable() else f"unavailable ({_state['why']})", file=sys.stderr)
