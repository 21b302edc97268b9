"""The one exception type for mistakes a user can make (bad file, column, row or option)."""


class UserInputError(ValueError):
    """A user-caused error; its message names the file, column, row or option and the value at fault.

    The CLI turns it into exit status 2 and one line on stderr.
    """
