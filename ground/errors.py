"""Errors the CLI turns into one line and a non-zero exit (the traceback only with --debug)."""


class FacesurvError(Exception):
    """Bad input or state the user can fix; the message says how."""

    exit_code = 2


class ConfigError(FacesurvError):
    """params.yaml is missing, malformed or has an invalid value."""


class DataError(FacesurvError):
    """Input data (a table, a photo, a target) fails a check."""


class NotAvailableError(FacesurvError):
    """A stage that has not been built yet, or an optional asset that is absent."""

    exit_code = 3
