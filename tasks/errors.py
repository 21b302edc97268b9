"""The one exception type for mistakes a user can make (bad file, column, row or option), and the
failure --fail-on-drift asks for."""


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
