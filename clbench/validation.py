"""Checks on user input that no run could make right, shared by the CLI, benchmarks and configs.

- **Names that become folders** (benchmark names from file names, strategy names, seeds) must
  be one plain path component: no separator, not ``.``/``..``, no leading dot (clbench keeps
  its lock and staging files as dot-files beside run directories), at most
  :data:`MAX_NAME_LENGTH` characters. Names read from results files are *sanitised* instead
  (:func:`safe_folder_name`) so a report of any results file stays under ``--out``.
- **Numbers** must be finite; integer settings stay below sane limits (the limit is in the
  message), since a value past them can only end in an out-of-memory crash or an overflow.
- **Seeds** are integers in ``0..SEED_MAX`` (what NumPy and every CUDA generator accept).
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

from clbench.errors import UsageError

MAX_NAME_LENGTH = 100
SEED_MAX = 2**32 - 1
# Integer settings never need more than this; a bigger value overflows torch sizes or loops.
INT_SETTING_MAX = 2**31 - 1
# Settings that size tensors or buffers: a value past these allocates more memory than any
# machine has (the largest adapter rank or batch a 70B-parameter model would use is far below).
SIZE_LIMITS = {
    "rank": 16_384, "sketch_rank": 16_384, "proj_rank": 16_384, "k": 16_384, "topk": 16_384, "experts": 16_384,
    "batch_size": 1_000_000, "eval_batch_size": 1_000_000, "replay_batch_size": 1_000_000, "fisher_batch_size": 1_000_000,
    "buffer_size": 100_000_000, "fisher_samples": 100_000_000,
    "epochs": 1_000_000, "iterations": 1_000_000_000, "grad_accum": 1_000_000,
}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_path_name(name: str, what: str) -> str:
    """Return ``name`` if it can name one folder under the output folder, else raise.

    Raises:
        UsageError: empty, too long, a path separator, ``.``/``..``, a leading dot or a control
            character, naming ``what`` (e.g. "benchmark name").
    """
    if not isinstance(name, str) or not name.strip():
        raise UsageError(f"{what} is empty")
    shown = name if len(name) <= 60 else f"{name[:40]}...({len(name)} characters)"
    if len(name) > MAX_NAME_LENGTH:
        raise UsageError(f"{what} {shown!r} is longer than {MAX_NAME_LENGTH} characters; use a shorter name")
    if "/" in name or "\\" in name or name in (".", "..") or name.startswith(".") or _CONTROL.search(name):
        raise UsageError(f"{what} {shown!r} cannot name a folder (no '/', '\\', control characters, '.' or '..', no leading '.')")
    return name


def safe_folder_name(name: object, fallback: str = "unnamed") -> str:
    """A folder name made from an untrusted string (e.g. a benchmark name read from a results
    file): separators, control characters and leading dots become ``-``; never empty, ``.``
    or ``..``; at most :data:`MAX_NAME_LENGTH` characters."""
    text = _CONTROL.sub("-", str(name)).replace("/", "-").replace("\\", "-").strip()
    text = text.lstrip(".") or fallback
    return text[:MAX_NAME_LENGTH]


def confined(root: Path, path: Path, what: str) -> Path:
    """``path`` if it resolves inside ``root`` (symlinks followed), else a :class:`UsageError`."""
    base = Path(os.path.realpath(root))
    target = Path(os.path.realpath(path))
    if target != base and base not in target.parents:
        raise UsageError(f"{what} {path} would be written outside {root}; refusing")
    return path


def check_seed(value: Any, what: str = "seed") -> int:
    """An integer seed in ``0..SEED_MAX`` (booleans and strings are refused)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"{what} must be an integer, got {value!r}")
    if not 0 <= value <= SEED_MAX:
        raise UsageError(f"{what} {value} is out of range: seeds are integers from 0 to {SEED_MAX}")
    return value


def parse_seed(text: str, what: str = "--seed") -> int:
    """A seed from command-line text (decimal integer)."""
    try:
        value = int(text.strip())
    except ValueError:
        raise UsageError(f"{what} takes comma-separated integers, got {text!r}") from None
    return check_seed(value, f"{what} value")


def check_number(key: str, value: Any, owner: str = "") -> None:
    """Refuse non-finite floats and integers past :data:`SIZE_LIMITS` / :data:`INT_SETTING_MAX`."""
    where = f"{owner}: " if owner else ""
    if isinstance(value, bool):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise UsageError(f"{where}{key} must be a finite number, got {value}")
    if isinstance(value, int):
        limit = SIZE_LIMITS.get(key, INT_SETTING_MAX)
        if abs(value) > limit:
            raise UsageError(f"{where}{key} = {value} is past the limit of {limit:,}".replace(",", "_"))
    if isinstance(value, tuple | list):
        for item in value:
            check_number(key, item, owner)


def check_data_root(path: Path | None) -> Path | None:
    """``--data-root`` must name an existing folder (a mistyped path must not be ignored).

    Returns it absolute: loaders cache what they scanned by folder path, and a relative path
    would name another folder once the working directory changes (the Python API).
    """
    if path is None:
        return None
    expanded = Path(path).expanduser()
    try:
        if not expanded.exists():
            raise UsageError(f"--data-root {path} does not exist; give the folder that holds the datasets")
        if not expanded.is_dir():
            raise UsageError(f"--data-root {path} is a file, not a folder; give the folder that holds the datasets")
    except OSError as exc:
        raise UsageError(f"--data-root {path}: {exc.strerror or exc}") from None
    return expanded.resolve()
