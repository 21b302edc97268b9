"""Training progress for people watching: log lines on stderr and a Prefect progress artifact."""

from __future__ import annotations

import logging
import time

from prefect.artifacts import create_progress_artifact, update_progress_artifact

from tasks.wording import counted

# At most one artifact update this often, and a log line when training enters a new tenth of the
# epoch budget (at most ten lines, and never two for one epoch).
UPDATE_EVERY_S = 0.5


class TrainingProgress:
    """A `progress(epoch, total, loss, distance)` callback for train_sgd."""

    def __init__(self, logger: logging.Logger | logging.LoggerAdapter, total: int, label: str):
        self.logger = logger
        self.total = total
        self.tenths_logged = 0
        self.last_update = 0.0
        self.artifact_id = create_progress_artifact(progress=0.0, description=f"Training: {label}")

    def __call__(self, epoch: int, total: int, loss: float, distance: float | None = None) -> None:
        """distance: the estimated max relative distance of the parameters to the optimum, if measured."""
        percent = 100.0 * epoch / total
        now = time.monotonic()
        if now - self.last_update >= UPDATE_EVERY_S:
            update_progress_artifact(artifact_id=self.artifact_id, progress=percent)
            self.last_update = now
        # With fewer than ten epochs one call can cross several tenths: one line still.
        tenths = min(10, epoch * 10 // total)
        if tenths > self.tenths_logged:
            estimate = "" if distance is None else f", estimated distance to the optimum {distance:.3g}"
            self.logger.info(f"training: epoch {epoch}/{total} ({percent:.0f}%), loss {loss:.10g}{estimate}")
            self.tenths_logged = tenths

    def finish(self, epochs: int, stop_reason: str, loss: float) -> None:
        """Mark the artifact complete: training ends early when the loss stops improving."""
        update_progress_artifact(artifact_id=self.artifact_id, progress=100.0)
        self.logger.info(f"training: stopped after {counted(epochs, 'epoch')} ({stop_reason}), loss {loss:.10g}")
