"""The small error hierarchy: the CLI prints any KbnError as one line, never a traceback.
Exception classes only: it must not import anything of kbn's, so every module can raise them."""


class KbnError(Exception):
    """Base of every error kbn expects and explains."""

    exit_code = 1


class ConfigError(KbnError, ValueError):
    """A setting has a bad value: the message names the field, the value and the choices."""

    exit_code = 2


class DataError(KbnError):
    """A dataset cannot be found or read: the message says how to get it."""


class DataFileError(DataError):
    """A data file the user named (npz:PATH) is there but cannot be a dataset as it is: their mistake."""

    exit_code = 2


class Interrupted(KbnError):
    """SIGINT or SIGTERM: the work stopped between steps and resumes where it stopped."""

    exit_code = 130
