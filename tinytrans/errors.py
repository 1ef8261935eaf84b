"""The one exception type a user ever sees.

Library code raises `UserError` for every mistake a user can make (a missing file, a bad option,
a corrupt checkpoint). The CLI prints its message as a single line and exits with code 2; any
other exception is a bug in tinytrans and keeps its traceback.
"""


class UserError(Exception):
    """A mistake in the user's input, described in one line that names the cause and the place."""
