"""Deterministic crash points for tests: die exactly here, as `kill -9` of the run's process group would."""

from __future__ import annotations

import os
import signal

CRASH_AT = "LINREG_CRASH_AT"


def crash_point(name: str) -> None:
    """SIGKILL the whole process group when the environment variable LINREG_CRASH_AT equals name."""
    if os.environ.get(CRASH_AT) == name:
        os.killpg(os.getpgrp(), signal.SIGKILL)
