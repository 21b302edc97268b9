"""`--dask [ADDRESS]`: the parts of every pass run as Prefect tasks on a Dask cluster.

A pass (tasks/kernels/passes.py) is fn(part) for each part of the design, then a stable merge.
`task_map` is a Mapper that submits each fn(part) as a Prefect task through the running flow's
task runner; with a DaskTaskRunner (`cluster`) they run on the cluster's workers, which read
their own row groups of the stored Parquet (the path must be visible to every worker). Results
come back in part order, so the merge, and the answer, equal the single-machine pass.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any, TypeVar

import distributed
from distributed.comm import get_address_host_port
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext
from prefect.task_runners import TaskRunner
from prefect_dask import DaskTaskRunner

from tasks.errors import UserInputError
from tasks.kernels.passes import Passes, local_map

T = TypeVar("T")

# Worker processes of the local cluster: one thread each, so a numpy-heavy part owns its core.
LOCAL_WORKERS = 2
# Seconds to reach a scheduler and see a worker: dask's own connect timeout; slow networks and
# clusters that are still starting their workers need this much.
PROBE_TIMEOUT = 30.0


def scheduler(address: str, timeout: float = PROBE_TIMEOUT) -> str:
    """The tcp://HOST:PORT of `--dask ADDRESS` (tcp://HOST:PORT, HOST:PORT or a scheduler file *.json),
    checked now: UserInputError (naming option --dask and the address) when no scheduler answers
    there within timeout seconds or it has no worker by then."""
    resolved = _scheduler_address(address)
    try:
        asyncio.run(_probe(resolved, timeout))
    except (OSError, TimeoutError) as exc:
        raise UserInputError(f"option --dask {address}: no Dask scheduler with a worker answered at "
                             f"{resolved} within {timeout:g} s ({exc})") from None
    return resolved


@contextmanager
def cluster(address: str | None, n_workers: int = LOCAL_WORKERS,
            timeout: float = PROBE_TIMEOUT) -> Iterator[tuple[DaskTaskRunner, Passes]]:
    """The cluster of a `linreg run --dask [ADDRESS]`, for the whole run: (the flow's task runner, the
    Passes of the ingest, which runs before the flow starts: its parts go to the workers directly).

    The scheduler at ADDRESS (checked by `scheduler`), or a LocalCluster of n_workers processes
    started here and closed when the run ends, however it ends; the flow's task runner connects to
    that same cluster (one start, not two)."""
    local = None
    if address is None:
        local = distributed.LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                                         dashboard_address=":0")  # any free port: never another run's
        resolved = local.scheduler_address
    else:
        resolved = scheduler(address, timeout)
    try:
        with distributed.Client(resolved, timeout=timeout, set_as_default=False) as client:
            yield DaskTaskRunner(address=resolved), Passes(partial(client_map, client), _parts(client))
    finally:
        if local is not None:
            local.close()


def client_map(client: distributed.Client, fn: Callable[[Any], T], parts: Sequence[Any]) -> list[T]:
    """Mapper on a Dask client: each fn(part) on the cluster's workers, results in part order (the
    ingest, before any flow run: plain Dask tasks, not Prefect's)."""
    return client.gather(client.map(fn, parts, pure=False))


def _scheduler_address(address: str) -> str:
    """tcp://HOST:PORT of ADDRESS; a *.json names the file `dask scheduler --scheduler-file` writes."""
    if address.endswith(".json"):
        try:
            with open(address, encoding="utf-8") as handle:
                address = str(json.load(handle)["address"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UserInputError(f"option --dask {address}: not a readable Dask scheduler file ({exc})") from None
    try:
        get_address_host_port(address)
    except ValueError as exc:
        raise UserInputError(f"option --dask {address}: not a Dask scheduler address ({exc}); "
                             "expected tcp://HOST:PORT, HOST:PORT or a scheduler file *.json") from None
    return address


async def _probe(address: str, timeout: float) -> None:
    # Asynchronous: a synchronous Client that failed to connect stalls for 2 x timeout when collected.
    async with distributed.Client(address, timeout=timeout, asynchronous=True, set_as_default=False) as client:
        await client.wait_for_workers(1, timeout=timeout)


def parts_for(runner: TaskRunner | None = None) -> int:
    """How many parts a pass uses under runner (default: the running flow's): two per thread of
    the Dask cluster (so a straggler holds up half a part, not a whole share), at least 1; 1 for
    any other runner. Only for a started runner: for a DaskTaskRunner it connects to its cluster as
    its first task would."""
    if runner is None:
        context = FlowRunContext.get()
        runner = context.task_runner if context else None
    return _parts(runner.client) if isinstance(runner, DaskTaskRunner) else 1


def _parts(client: distributed.Client) -> int:
    """Two parts per thread of the cluster's workers, at least 1."""
    return max(1, 2 * sum(client.nthreads().values()))


@task(name="pass-part", cache_policy=NO_CACHE, persist_result=False)
def pass_part(fn: Callable[[Any], T], part: Any) -> T:
    """One part of a pass, fn(part), wherever the flow's task runner puts it."""
    return fn(part)


def task_map(fn: Callable[[Any], T], parts: Sequence[Any]) -> list[T]:
    """Mapper: each fn(part) as a Prefect task through the running flow's task runner, results in
    part order; outside a flow run, local_map. fn and parts travel by pickle (fn a module-level
    function or a functools.partial of one)."""
    if FlowRunContext.get() is None:
        return local_map(fn, parts)
    kernel = getattr(fn, "func", fn).__name__
    futures = [pass_part.with_options(task_run_name=f"{kernel}-{i}").submit(fn, part)
               for i, part in enumerate(parts)]
    with _worker_slot_released():
        return [future.result() for future in futures]


@contextmanager
def _worker_slot_released() -> Iterator[None]:
    """Inside a task that itself runs on a Dask worker (a step submitted to the cluster), give its
    thread back to the worker while the parts run: with every thread waiting on parts, no part
    could start (dask's secede/rejoin, as worker_client does)."""
    try:
        distributed.get_worker()
    except ValueError:  # not on a worker: nothing to release
        on_worker = False
    else:
        on_worker = True
    if not on_worker:
        yield
        return
    distributed.secede()
    try:
        yield
    finally:
        distributed.rejoin()
