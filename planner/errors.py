"""Exceptions shared by the whole library.

The CLI turns an :class:`InputError` into one line on stderr and exit code 2;
any other :class:`PlannerError` into one line and exit code 1.
"""


class PlannerError(Exception):
    """Base class for errors the planner reports to its user in plain words."""


class InputError(PlannerError, ValueError):
    """Bad input from the user: an unreadable file, an invalid plan, a bad option.

    The message names the file (or JSON path) and the problem in one line.
    """
