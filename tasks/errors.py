"""The one exception type for mistakes a user can make (bad file, column, row or option), and the
failure --fail-on-drift asks for."""

import logging


class UserInputError(ValueError):
    """A user-caused error; its message names the file, column, row or option and the value at fault.

    The CLI turns it into exit status 2 and one line on stderr.
    """


class AlertRaised(RuntimeError):
    """--fail-on-drift: the run wrote its version (path), then fails on its alerts (the message)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{message} (--fail-on-drift; the version is written: {path})")
        self.path = path


def retry_unless_user_error(task, task_run, state) -> bool:
    """Prefect retry condition for I/O tasks: retry transient failures, never a user's mistake."""
    try:
        state.result()
    except UserInputError:
        return False
    except Exception:  # noqa: BLE001 - any other failure may be transient (disk, network, API)
        return True
    return True


class _OneLine(logging.Filter):
    """A UserInputError logged by Prefect (a task or flow run that failed on one) keeps its message
    and loses its traceback: the message names what is at fault, the traceback says nothing more."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, UserInputError):
            record.exc_info, record.exc_text = None, None
        return True


def user_errors_in_one_line() -> None:
    """Put _OneLine on the handlers of Prefect's loggers (once Prefect has configured its logging)."""
    for name in ("prefect", "prefect.flow_runs", "prefect.task_runs", ""):
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, _OneLine) for f in handler.filters):
                handler.addFilter(_OneLine())
