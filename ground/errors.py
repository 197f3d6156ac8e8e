"""Errors the CLI turns into one line and a non-zero exit (the traceback only with --debug)."""


class FacesurvError(Exception):
    """Bad input or state the user can fix; the message says how."""

    exit_code = 2


class ConfigError(FacesurvError):
    """params.yaml is missing, malformed or has an invalid value."""


class DataError(FacesurvError):
    """Input data (a table, a photo, a target) fails a check."""


class NotAvailableError(FacesurvError):
    """An optional asset or store that is absent (a champion, a ledger, weights)."""

    exit_code = 3
