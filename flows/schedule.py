"""`linreg serve`: the regression flow as a Prefect deployment on a schedule."""

from __future__ import annotations

from tasks.config import RunConfig
from tasks.errors import UserInputError


def serve_flow(config: RunConfig, cron: str | None, interval: float | None, name: str) -> None:
    """Serve the flow on a cron or interval schedule until SIGINT/SIGTERM."""
    from flows.regression import regression_flow

    if (cron is None) == (interval is None):
        raise UserInputError("options --cron/--interval: give exactly one of them")
    if interval is not None and interval <= 0:
        raise UserInputError(f"option --interval: must be positive, got {interval}")
    regression_flow.serve(
        name=name,
        cron=cron,
        interval=interval,
        parameters={"config": config.model_dump(mode="json")},
    )
