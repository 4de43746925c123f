"""Errors meant for the person running dist-lstm, not for a debugger.

Every message names the thing that is wrong (a config key, a file, a line) and how to fix
it. The entry points print these without a traceback; anything else is a bug.
"""


class UserError(Exception):
    """Base class of problems the user can fix; printed as one clear message."""


class ConfigError(UserError):
    """A config value is invalid; the message names the key to change."""


class DataError(UserError):
    """A data file is missing, malformed or inconsistent; the message names the file."""
