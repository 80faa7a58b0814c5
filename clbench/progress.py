"""Progress of training and evaluation: a tqdm bar on a terminal, plain periodic lines elsewhere.

When stderr is redirected (a log file, a batch job, CI), a bar would be invisible or a mess of
carriage returns, so progress is reported as ordinary log lines instead: one line every
:data:`INTERVAL` seconds (``$CLBENCH_PROGRESS_INTERVAL`` overrides it), e.g.
``lora s0 train 2/5 digits-2-3: 120/300 steps (40%), 31s elapsed, ~46s left``.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

log = logging.getLogger("clbench")

INTERVAL = 30.0


def _interval() -> float:
    try:
        return max(0.0, float(os.environ.get("CLBENCH_PROGRESS_INTERVAL", INTERVAL)))
    except ValueError:
        return INTERVAL


class PlainProgress:
    """The part of tqdm's interface the loops use (``update``, ``close``), printing lines."""

    def __init__(self, total: int, label: str, unit: str) -> None:
        self.total, self.label, self.unit = total, label, unit
        self.done = 0
        self.start = self.last = time.monotonic()
        self.every = _interval()

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= self.every and self.done < self.total:
            self.last = now
            elapsed = now - self.start
            left = elapsed / self.done * (self.total - self.done) if self.done else 0.0
            log.info("%s: %d/%d %s (%d%%), %.0fs elapsed, ~%.0fs left", self.label, self.done, self.total, self.unit,
                     100 * self.done // max(self.total, 1), elapsed, left)

    def close(self) -> None:
        """Nothing to clear (the runner logs each task's end)."""


class _NoProgress:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: int, label: str, enabled: bool, unit: str) -> Any:
    """A tqdm bar when stderr is a terminal, :class:`PlainProgress` when it is not, nothing when disabled."""
    if not enabled:
        return _NoProgress()
    if sys.stderr.isatty():
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=label, leave=False, mininterval=0.5, unit=unit)
    return PlainProgress(total, label, unit + "s" if unit in ("step",) else "examples" if unit == "ex" else unit)
