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


class DataError(ClbenchError):
    """A dataset file is present but damaged or empty; the message names the file."""

    exit_code = 2


class StorageError(ClbenchError):
    """Writing (or reading) a file failed in the file system: full disk, quota, I/O error,
    read-only folder. The message names the file and the cause; earlier files are intact."""

    exit_code = 1


class RunInUseError(ClbenchError):
    """Another process holds the run directory's lock; the message names its PID."""

    exit_code = 3


class TrainingError(ClbenchError):
    """Training went wrong in a way no setting can repair mid-run (a non-finite loss)."""

    exit_code = 1


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled exactly like Ctrl-C (SIGINT): the run stops and says what it kept."""
