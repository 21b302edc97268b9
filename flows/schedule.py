"""`linreg serve`: the regression flow as a Prefect deployment on a schedule."""

from __future__ import annotations

import signal

from tasks.config import RunConfig
from tasks.errors import UserInputError


def check_api(timeout: float = 5.0) -> str:
    """The Prefect API URL in use, after checking that a server answers there."""
    import httpx
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        raise UserInputError(
            "PREFECT_API_URL is not set: start a server (make server) and "
            "export PREFECT_API_URL=http://127.0.0.1:4200/api")
    try:
        response = httpx.get(url.rstrip("/") + "/health", timeout=timeout)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        raise UserInputError(f"PREFECT_API_URL {url}: no Prefect server answers there ({exc})") from None
    return url


_STOPPING: list[int] = []  # the signal that asked serving to stop, once one has


def _stop_on_sigterm() -> None:
    """SIGTERM stops serving the way Ctrl-C does (Prefect's runner handles KeyboardInterrupt)."""
    def handler(signum, frame):
        _STOPPING.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def serve_flow(config: RunConfig, cron: str | None, interval: float | None, name: str) -> None:
    """Serve the flow on a cron or interval schedule until SIGINT/SIGTERM."""
    if (cron is None) == (interval is None):
        raise UserInputError("options --cron/--interval: give exactly one of them")
    if interval is not None and interval <= 0:
        raise UserInputError(f"option --interval: must be positive, got {interval}")
    if cron is not None:
        from prefect.client.schemas.schedules import CronSchedule

        try:
            CronSchedule(cron=cron)
        except ValueError:
            raise UserInputError(f"option --cron: {cron!r} is not a valid cron expression") from None
    check_api()
    from flows.regression import regression_flow
    from tasks.errors import user_errors_in_one_line

    user_errors_in_one_line()  # a scheduled run that fails on its input or store: its message, no traceback

    _stop_on_sigterm()
    try:
        regression_flow.serve(
            name=name,
            cron=cron,
            interval=interval,
            parameters={"config": config.model_dump(mode="json")},
            description=f"linreg-flow on {config.data}, every {interval} s" if interval else
            f"linreg-flow on {config.data}, cron {cron}",
        )
    except KeyboardInterrupt:
        pass
    except Exception:  # noqa: BLE001 - a stop that lands while the runner starts or stops up may surface as
        # another error of its shutdown (the event loop's, a cancelled task's): a requested stop is still clean
        if not _STOPPING:
            raise
