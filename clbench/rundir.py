"""A run directory's life: one writer at a time, ``--overwrite`` staged, failed starts undone.

Beside each run directory ``OUT/<benchmark>/<strategy>/seed-N`` (``seed-N-kv-<policy>`` for a
run evaluated under a KV-cache policy) clbench keeps two dot-files:

``.seed-N.lock``
    The lock file. A run holds an exclusive ``flock`` on it for its whole life (``--resume`` and
    ``--overwrite`` too), with its PID, host and start time written inside. A second process
    asking for the same run gets one line naming that PID. The kernel drops the lock when its
    holder dies, so a lock left by a killed process (``kill -9``, a crashed node) is simply
    taken over by the next run; the file is removed on release (unlinked while still locked,
    and every acquirer checks it locked the file that is still at the path).
``.seed-N.previous``
    The run an ``--overwrite`` replaces. It is moved aside (a rename, under the lock) only after
    the new run has been fully validated and built; if the new run stops before its first
    checkpoint (an error, Ctrl-C, SIGTERM) it is moved back. After the first checkpoint the new
    run is resumable, and the old one stays aside until the new run completes, then is deleted.
    A process killed outright leaves the staging in place; the next run of that directory
    finishes the job under the lock (see :meth:`RunDirectory._recover`).

A new run that stops before its first checkpoint leaves nothing behind: its folder, the folders
created for it and the lock file are removed. A resumed run never deletes anything.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from clbench.errors import RunInUseError, UsageError
from clbench.safeio import describe, make_dirs, remove_empty_dirs, remove_tree, storage_error
from clbench.identity import run_folder_name
from clbench.validation import check_path_name

log = logging.getLogger("clbench")

RESULTS_FILE = "results.json"
POINTER = Path("checkpoint") / "checkpoint.json"
PROBE_RETRIES = 5


def run_directory(out: Path, benchmark: str, strategy: str, seed: int, kv_cache: str | None = "full",
                  settings: dict[str, Any] | None = None) -> Path:
    """``out/<benchmark>/<strategy>/<run folder>``, each part checked to be one plain folder name.

    The run folder is ``seed-<seed>``, then ``-kv-<policy>`` for a KV-cache policy other than the
    full cache (``seed-0-kv-d2o-0.2``; a malformed policy is refused here too), then
    ``-S-key=value,...`` for strategy ``settings`` that differ from their defaults
    (:func:`clbench.identity.run_folder_name`).
    """
    check_path_name(benchmark, "benchmark name")
    check_path_name(strategy, "strategy name")
    return Path(out) / benchmark / strategy / run_folder_name(seed, kv_folder_suffix(kv_cache), settings)


def kv_folder_suffix(kv_cache: str | None) -> str:
    """``""`` for the full cache, else ``-kv-<policy>`` (the policy as a plain folder-name part)."""
    if kv_cache in (None, "full"):
        return ""
    from clbench.kvcache import parse_kv_cache, policy_slug  # torch and transformers: only when a policy is named

    policy = parse_kv_cache(kv_cache)
    if policy.is_full:
        return ""
    return "-kv-" + check_path_name(policy_slug(policy.spec), "--kv-cache policy")


def lock_path(run_dir: Path) -> Path:
    return run_dir.parent / f".{run_dir.name}.lock"


def previous_path(run_dir: Path) -> Path:
    return run_dir.parent / f".{run_dir.name}.previous"


def replaced_path(run_dir: Path) -> Path:
    return run_dir.parent / f".{run_dir.name}.replaced"


def run_state(run_dir: Path) -> str:
    """``missing``, ``started`` (no checkpoint), ``checkpointed`` or ``complete``."""
    if not run_dir.is_dir():
        return "missing"
    try:
        status = json.loads((run_dir / RESULTS_FILE).read_text(encoding="utf-8")).get("status")
    except (OSError, ValueError, AttributeError):
        status = None
    if status == "complete":
        return "complete"
    return "checkpointed" if (run_dir / POINTER).is_file() else "started"


class RunLock:
    """An exclusive, non-blocking ``flock`` on a lock file, with the holder's PID inside."""

    def __init__(self, path: Path, run_dir: Path) -> None:
        self.path = path
        self.run_dir = run_dir
        self.fd: int | None = None
        self.stale_owner: str | None = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`RunInUseError` naming the holder."""
        for _ in range(100):  # retries only when a releasing holder unlinked the file under us
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise storage_error(exc, "create the lock file", self.path) from None
            try:
                self._flock(fd)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise in_use_error(self.run_dir, self._holder()) from None
                raise storage_error(exc, "lock", self.path) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the previous holder removed the file after we opened it: lock the new one
                os.close(fd)
                continue
            self.fd = fd
            self.stale_owner = self._read_owner()
            self._write_owner()
            return
        raise RunInUseError(f"run directory {self.run_dir}: could not take the lock file {self.path}; another process keeps replacing it")

    @staticmethod
    def _flock(fd: int) -> None:
        """``LOCK_EX | LOCK_NB``, retried briefly: :func:`holder` probes hold a shared lock for
        microseconds, and such a probe must not pass for a run holding the directory."""
        for attempt in range(PROBE_RETRIES):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN) or attempt == PROBE_RETRIES - 1:
                    raise
                time.sleep(0.02)

    def _read_owner(self) -> str | None:
        assert self.fd is not None
        try:
            text = os.pread(self.fd, 4096, 0).decode("utf-8", "replace")
            owner = json.loads(text) if text.strip() else None
        except (OSError, ValueError):
            return None
        return f"process {owner.get('pid')} on {owner.get('host')}" if isinstance(owner, dict) else None

    def _write_owner(self) -> None:
        assert self.fd is not None
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": dt.datetime.now().astimezone().isoformat(timespec="seconds")}
        try:
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, (json.dumps(record) + "\n").encode(), 0)
        except OSError:
            pass  # the PID is for messages only; the flock is the lock

    def _holder(self) -> str:
        try:
            owner = json.loads(self.path.read_text(encoding="utf-8"))
            return f"process {owner['pid']} on {owner['host']} (started {owner['started']})"
        except (OSError, ValueError, KeyError, TypeError):
            return "another process"

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()  # while still locked: a waiting acquirer will notice and retry
        os.close(self.fd)
        self.fd = None


def holder(run_dir: Path) -> str | None:
    """Who holds ``run_dir``'s lock right now (``None`` when nobody does); writes nothing."""
    path = lock_path(run_dir)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return RunLock(path, run_dir)._holder()
    finally:
        os.close(fd)  # closing drops a shared lock we may have taken
    return None


def in_use_error(run_dir: Path, who: str) -> RunInUseError:
    return RunInUseError(f"run directory {run_dir} is in use by {who}; wait for it to finish or stop it (lock file {lock_path(run_dir)})")


class RunDirectory:
    """Context manager owning one run directory for the life of a run.

    Args:
        run_dir: the run directory.
        mode: ``new`` (must hold no results yet), ``resume`` or ``overwrite``.

    On entry: creates the parent folders, takes the lock, finishes an interrupted earlier
    overwrite, checks the directory against ``mode`` and stages an ``--overwrite``. The runner
    calls :meth:`checkpointed` after each checkpoint and :meth:`completed` at the end. On an
    exception the directory is put back as described in the module docstring.
    """

    def __init__(self, run_dir: Path, mode: str) -> None:
        if mode not in ("new", "resume", "overwrite"):
            raise ValueError(f"unknown run mode {mode!r}")
        self.run_dir = run_dir
        self.mode = mode
        self.lock = RunLock(lock_path(run_dir), run_dir)
        self.previous = previous_path(run_dir)
        self.created: list[Path] = []
        self.moved_to: Path | None = None  # where this run moved the old directory (overwrite)
        self.entries_before: set[str] | None = None  # what a not-yet-checkpointed run_dir held before us (kept on failure)
        self.checkpoints = 0
        self.resumable = False  # a resumed directory that already had a checkpoint (never deleted on failure)
        self.outcome = ""

    # ---- entry ----------------------------------------------------------------------------
    def __enter__(self) -> RunDirectory:
        self.created = make_dirs(self.run_dir.parent)
        try:
            self.lock.acquire()
            if self.lock.stale_owner:
                log.info("took over the lock of %s left by %s, which no longer runs it", self.run_dir, self.lock.stale_owner)
            self._recover()
            self._stage()
        except BaseException:
            if self.moved_to is not None:  # interrupted between moving the old run aside and creating the new folder
                self._undo()
            self.lock.release()
            remove_empty_dirs(self.created)
            raise
        return self

    def _recover(self) -> None:
        """Finish what a killed run left: its temporary files, and an ``--overwrite``'s staging
        (the earlier run is restored, kept aside or dropped, see the module docstring)."""
        for folder in (self.run_dir, self.run_dir / "checkpoint"):
            for stale in folder.glob(".*.tmp") if folder.is_dir() else ():
                remove_tree(stale)  # a write cut short by kill -9; we hold the lock, so nobody else is writing
        state = run_state(self.run_dir)
        replaced = replaced_path(self.run_dir)
        if replaced.exists():
            if state in ("checkpointed", "complete"):
                remove_tree(replaced)
            else:
                self._put_back(replaced)
                state = run_state(self.run_dir)
        if self.previous.exists():
            if state == "complete":
                remove_tree(self.previous)
            elif state != "checkpointed":
                self._put_back(self.previous)
                log.info("restored %s: an --overwrite of it stopped before its first checkpoint", self.run_dir)

    def _put_back(self, aside: Path) -> None:
        remove_tree(self.run_dir)
        try:
            os.rename(aside, self.run_dir)
        except OSError as exc:
            raise storage_error(exc, "restore", f"{aside} to {self.run_dir}") from None

    def _stage(self) -> None:
        results = self.run_dir / RESULTS_FILE
        self.resumable = self.mode == "resume" and run_state(self.run_dir) in ("checkpointed", "complete")
        if self.mode == "resume" and self.run_dir.exists() and not self.resumable:
            self.entries_before = {p.name for p in self.run_dir.iterdir()}  # started, never checkpointed: keep what was there
        if self.mode == "new":
            if results.exists():
                raise UsageError(f"{self.run_dir} already holds a run; pass --resume to continue it or --overwrite to start again")
            if self.run_dir.exists():
                self.entries_before = {p.name for p in self.run_dir.iterdir()}
        if self.mode == "overwrite" and self.run_dir.exists():
            aside = replaced_path(self.run_dir) if self.previous.exists() else self.previous
            try:
                os.rename(self.run_dir, aside)
            except OSError as exc:
                raise storage_error(exc, "move aside", self.run_dir) from None
            self.moved_to = aside
        existed = self.run_dir.exists()
        try:
            self.run_dir.mkdir(exist_ok=True)
        except OSError as exc:
            self._undo()
            raise storage_error(exc, "create folder", self.run_dir) from None
        if not existed:
            self.entries_before = set()

    # ---- progress -------------------------------------------------------------------------
    def checkpointed(self) -> None:
        """The run saved a checkpoint: from now on it is kept when it stops (resumable)."""
        self.checkpoints += 1
        if self.checkpoints == 1 and self.moved_to is not None and self.moved_to != self.previous:
            remove_tree(self.moved_to)  # an unfinished overwrite this run replaced; the finished run stays in .previous
            self.moved_to = None

    def completed(self) -> None:
        """The run wrote complete results: the run it overwrote is deleted."""
        remove_tree(self.previous)
        self.moved_to = None

    # ---- exit -----------------------------------------------------------------------------
    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        try:
            if exc is not None:
                self.outcome = self._stopped()
        finally:
            self.lock.release()
            if not self.run_dir.exists():
                remove_empty_dirs(self.created)

    def _stopped(self) -> str:
        """Put the directory back after a failure; returns what was kept, for the message."""
        if self.checkpoints:
            kept = f"{self.checkpoints} task(s) are checkpointed in {self.run_dir}; continue with --resume"
            if self.previous.exists():
                kept += f" (the run it replaces stays in {self.previous} until this one completes)"
            return kept
        if self.resumable:
            return f"{self.run_dir} is as it was"
        return self._undo()

    def _undo(self) -> str:
        if self.entries_before:
            for path in self.run_dir.iterdir():
                if path.name not in self.entries_before:
                    remove_tree(path)
            return "files it created were removed"
        remove_tree(self.run_dir)
        if self.moved_to is not None:
            try:
                os.rename(self.moved_to, self.run_dir)
            except OSError as exc:
                return f"the earlier run could not be moved back from {self.moved_to} ({describe(exc)})"
            self.moved_to = None
            return f"the earlier run in {self.run_dir} was restored"
        return f"its folder {self.run_dir} was removed"


class RunLogHandler(logging.FileHandler):
    """``run.log``: a file handler that never prints a traceback when the disk fails.

    The standard handler reports a failed write with a "--- Logging error ---" traceback on
    stderr; here the first failure closes the log quietly (the run's next results write reports
    the disk error as one line).
    """

    failed = False

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        self.failed = True
        with contextlib.suppress(Exception):
            self.close()

    def emit(self, record: logging.LogRecord) -> None:
        if not self.failed:
            super().emit(record)


def attach_run_log(run_dir: Path, logger: logging.Logger) -> RunLogHandler:
    """Append the run's messages to ``run_dir/run.log``."""
    try:
        handler = RunLogHandler(run_dir / "run.log", encoding="utf-8")
    except OSError as exc:
        raise storage_error(exc, "write", run_dir / "run.log") from None
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)
    return handler


def detach_run_log(handler: logging.Handler | None, logger: logging.Logger) -> None:
    if handler is not None:
        logger.removeHandler(handler)
        handler.close()


__all__ = ["RunDirectory", "RunLock", "RunLogHandler", "in_use_error", "attach_run_log", "detach_run_log", "holder", "kv_folder_suffix", "run_directory", "run_state"]
