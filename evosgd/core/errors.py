"""Errors a user can act on.

Every error evosgd raises for bad input is an :class:`EvosgdError`; the command line prints its
message (no traceback) and exits with status 2.  A message names the thing that is wrong, what
was given and what is allowed.
"""

from __future__ import annotations

from typing import Any


class EvosgdError(Exception):
    """Base class of the errors that are the user's to fix (bad input, unavailable device)."""


class ParameterError(EvosgdError, ValueError):
    """A parameter value outside what is allowed.

    >>> str(ParameterError("dim", -3, "an integer >= 1", where="landscape 'sphere'"))
    "landscape 'sphere': parameter 'dim' = -3 is not allowed; allowed: an integer >= 1"
    """

    def __init__(self, name: str, given: Any, allowed: str, where: str | None = None):
        self.name, self.given, self.allowed, self.where = name, given, allowed, where
        prefix = f"{where}: " if where else ""
        super().__init__(f"{prefix}parameter '{name}' = {given!r} is not allowed; allowed: {allowed}")


class ConfigError(EvosgdError, ValueError):
    """A problem (or several) in a configuration or scenario file.

    ``problems`` holds one line per problem so callers can report them all at once.
    """

    def __init__(self, message: str, problems: list[str] | None = None):
        self.problems = problems or [message]
        super().__init__(message)


class DeviceError(EvosgdError, RuntimeError):
    """A device that was asked for but is not available, or a footprint that cannot fit it."""
