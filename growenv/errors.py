"""The user-error type: bad input that a front end reports as one line.

:class:`UserError` marks an error as the user's (a bad argument, a missing file, a run that
exists already), as opposed to a bug. The ``growenv`` command line prints a ``UserError`` as
one line and exits with status 2; any other exception keeps its traceback. It subclasses
``ValueError`` so that code that catches the library's validation errors keeps catching it.
"""

from __future__ import annotations

__all__ = ["UserError"]


class UserError(ValueError):
    """Bad input, reported as one line: ``"name: expected ..., got ..."``.

    Parameters
    ----------
    message
        The one-line message; it names the argument and says what was expected.
    """

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))  # one line, whatever came in
