"""Training progress: one log line per tenth of the epoch budget, never the same epoch twice."""

from __future__ import annotations

import re
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tasks.training import progress as progress_module
from tasks.training.progress import TrainingProgress

LINE = re.compile(r"training: epoch (\d+)/(\d+) ")


class _Logger:
    """Collects what TrainingProgress logs."""

    def __init__(self):
        self.lines: list[str] = []

    def info(self, message: str) -> None:
        self.lines.append(message)

    def epochs(self) -> list[int]:
        return [int(m.group(1)) for m in map(LINE.match, self.lines) if m]


@pytest.fixture
def artifacts(monkeypatch) -> list[float]:
    """Prefect's progress-artifact calls replaced by a list of the progress values sent."""
    sent: list[float] = []

    def create(progress: float, description: str) -> str:
        sent.append(progress)
        return "artifact-id"

    def update(artifact_id: str, progress: float) -> None:
        assert artifact_id == "artifact-id"
        sent.append(progress)

    monkeypatch.setattr(progress_module, "create_progress_artifact", create)
    monkeypatch.setattr(progress_module, "update_progress_artifact", update)
    return sent


def _run(calls: list[int], total: int) -> _Logger:
    logger = _Logger()
    progress = TrainingProgress(logger, total, "test")
    for epoch in calls:
        progress(epoch, total, 0.5)
    return logger


def test_three_epochs_log_each_epoch_once(artifacts):
    """total=3, called after every epoch: one line for epoch 1, 2 and 3 each (it used to be ten)."""
    assert _run([1, 2, 3], total=3).epochs() == [1, 2, 3]


def test_one_call_that_crosses_every_tenth_logs_one_line(artifacts):
    """train_sgd reports a 3-epoch run once, at epoch 3: one line, not ten."""
    logger = _run([3], total=3)
    assert logger.epochs() == [3]
    assert logger.lines == ["training: epoch 3/3 (100%), loss 0.5"]


def test_a_thousand_epochs_log_at_most_ten_lines(artifacts):
    """total=1000, called after every epoch: exactly the epochs that enter a new tenth, 100 to 1000."""
    assert _run(list(range(1, 1001)), total=1000).epochs() == list(range(100, 1001, 100))


@given(total=st.integers(1, 5000), data=st.data())
def test_lines_are_one_per_new_tenth_for_any_call_pattern(total, data):
    """Any increasing sequence of reported epochs: a line exactly when a call enters a new tenth
    (floor(10 epoch / total) grows), so at most ten lines and never one epoch twice."""
    calls = sorted(data.draw(st.sets(st.integers(1, total), max_size=60)))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(progress_module, "create_progress_artifact", lambda progress, description: "id")
        patch.setattr(progress_module, "update_progress_artifact", lambda artifact_id, progress: None)
        epochs = _run(calls, total).epochs()
    # Independently of the code's bucket arithmetic: the k-th tenth is reached at the exact rational
    # k total / 10; a call logs when it is the first to reach one or more of those marks.
    marks = [Fraction(k * total, 10) for k in range(1, 11)]
    expected = [epoch for previous, epoch in zip([0, *calls], calls) if any(previous < m <= epoch for m in marks)]
    assert epochs == expected
    assert len(epochs) <= 10 and len(set(epochs)) == len(epochs)


def test_finish_completes_the_artifact_and_logs_the_outcome(artifacts):
    """The artifact ends at 100 % and the last line says why training stopped."""
    logger = _Logger()
    progress = TrainingProgress(logger, 50, "test")
    progress(8, 50, 2.0)
    progress.finish(12, "tol", 1.25)
    assert artifacts[0] == 0.0 and artifacts[-1] == 100.0
    assert logger.lines[-1] == "training: stopped after 12 epochs (tol), loss 1.25"
