"""Errors that reach the user as one line and a non-zero exit code, never a traceback."""

from __future__ import annotations


class ClbenchError(Exception):
    """Base class for errors clbench reports as one line. ``exit_code`` is the process status."""

    exit_code = 1


class UsageError(ClbenchError):
    """The user asked for something invalid: an unknown name, a bad option or value, a bad file."""

    exit_code = 2


class MissingAssetError(ClbenchError):
    """A model, dataset or package the run needs is not available; the message says how to get it."""

    exit_code = 2


class ResultsError(ClbenchError):
    """A results file is unreadable, partial or incompatible with the others asked for."""

    exit_code = 2
