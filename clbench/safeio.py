"""Crash-safe writes and one-line storage errors (no torch: reports use this too).

Every file clbench writes for a run or a report goes through :func:`atomic_writer`: the bytes go
to a temporary file in the target's folder, are flushed and fsynced, then renamed over the target,
and the folder is fsynced. A crash, a full disk or an I/O error therefore leaves the previous
version of the file (or no file), never a half-written one. A file-system failure becomes a
:class:`~clbench.errors.StorageError` naming the file and the cause (disk full, quota, file-size
limit, read-only folder, permission, I/O error) instead of a traceback.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from clbench.errors import StorageError, UsageError

CAUSES = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EFBIG: "the file-size limit was reached",
    errno.EIO: "an I/O error occurred",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENAMETOOLONG: "the file name is too long",
    errno.ENOTDIR: "a parent of it is a file, not a folder",
    errno.EISDIR: "it is a folder",
}
# A checkpoint is refused when the disk would be left with less than this after writing it.
FREE_SPACE_RESERVE = 1 << 20


def describe(exc: OSError) -> str:
    """A short cause for a file-system error (``the disk is full``, ...)."""
    return CAUSES.get(exc.errno or 0) or exc.strerror or str(exc)


def storage_error(exc: OSError, action: str, path: Path | str) -> StorageError:
    """A one-line :class:`StorageError` for ``exc`` raised while ``action``-ing ``path``."""
    hint = "; free some space and rerun" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else ""
    return StorageError(f"cannot {action} {path}: {describe(exc)}{hint}")


def _write(fd: int, data: memoryview) -> int:
    """``os.write``; the one place file bytes leave clbench (tests inject faults here)."""
    return os.write(fd, data)


class _FileWriter:
    """A minimal binary file object over a descriptor that remembers the first ``OSError``.

    ``torch.save`` turns a failing ``write`` into a ``RuntimeError`` ("unexpected pos"); the
    remembered error lets :func:`atomic_writer` report the real cause (e.g. a full disk).
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.error: OSError | None = None
        self.written = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        view = memoryview(data).cast("B")
        size = len(view)
        try:
            while view:
                view = view[_write(self.fd, view):]
        except OSError as exc:
            self.error = self.error or exc
            raise
        self.written += size
        return size

    def flush(self) -> None:
        """Nothing is buffered here; durability comes from the fsync before the rename."""


def fsync_dir(folder: Path) -> None:
    """Make a rename inside ``folder`` durable (no-op where directories cannot be fsynced)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_writer(path: Path) -> Iterator[_FileWriter]:
    """Write ``path`` atomically: yield a file object for a temp file, then fsync and rename.

    On any failure the temp file is removed, ``path`` keeps its previous content, and an
    ``OSError`` is re-raised as :class:`StorageError`.
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise storage_error(exc, "write", path) from None
    writer = _FileWriter(fd)
    try:
        yield writer
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except BaseException as exc:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        cause = writer.error or (exc if isinstance(exc, OSError) else None)
        if cause is not None:
            raise storage_error(cause, "write", path) from None
        raise
    fsync_dir(path.parent)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` by ``data`` atomically (see :func:`atomic_writer`)."""
    with atomic_writer(path) as handle:
        handle.write(data)


def write_text_atomic(path: Path, text: str) -> None:
    """Replace ``path`` by UTF-8 ``text`` atomically."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: Path, data: Any) -> None:
    """Replace ``path`` by indented JSON atomically (``data`` must be JSON-ready, no NaN)."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False, allow_nan=False) + "\n")


def first_existing(path: Path) -> Path:
    """``path`` or its nearest existing ancestor."""
    path = Path(os.path.abspath(path))
    while not os.path.lexists(path) and path.parent != path:
        path = path.parent
    return path


def check_output_folder(path: Path, what: str) -> None:
    """Refuse, before anything is written, an output folder that cannot be created or written.

    Raises:
        UsageError: ``path`` (or the ancestor it would be created in) is a file, or is not
            writable (read-only file system, no permission).
    """
    try:
        existing = first_existing(Path(path))
        if not existing.is_dir():
            raise UsageError(f"{what} {path}: {existing} is a file, not a folder; choose another {what}")
        if not os.access(existing, os.W_OK | os.X_OK):
            cause = "the file system is read-only" if _read_only_fs(existing) else "permission denied"
            raise UsageError(f"{what} {path} is not writable ({existing}: {cause}); choose another {what}")
    except OSError as exc:
        raise UsageError(f"{what} {path}: {describe(exc)}") from None


def _read_only_fs(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


def make_dirs(path: Path) -> list[Path]:
    """``mkdir -p path``; returns the folders it created, outermost first (for cleanup)."""
    path = Path(path)
    missing = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    created = []
    for folder in reversed(missing):
        try:
            folder.mkdir()
            created.append(folder)
        except FileExistsError:
            if not folder.is_dir():
                remove_empty_dirs(created)
                raise StorageError(f"cannot create folder {path}: {folder} is a file") from None
        except OSError as exc:
            remove_empty_dirs(created)
            raise storage_error(exc, "create folder", folder) from None
    return created


def remove_empty_dirs(created: list[Path]) -> None:
    """Remove folders :func:`make_dirs` created, innermost first, where they are still empty."""
    for folder in reversed(created):
        with contextlib.suppress(OSError):
            folder.rmdir()


def remove_tree(path: Path) -> None:
    """Delete a file or folder tree if it exists (best effort: cleanup must not hide the cause)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError, OSError):
            path.unlink()


def ensure_free_space(folder: Path, needed: int, what: str) -> None:
    """Refuse to start writing ``what`` (about ``needed`` bytes) into ``folder`` when the disk
    clearly has no room for it; cheap (one ``statvfs``), best effort."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    if free < needed + FREE_SPACE_RESERVE:
        raise StorageError(f"not enough free space in {folder} for {what}: it needs about {_size(needed)} and "
                           f"{_size(free)} is free; free some space and rerun")


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"
