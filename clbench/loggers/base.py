"""The interface every experiment logger implements, built-in or third-party.

A logger is a class registered in the entry-point group ``clbench.loggers``::

    [project.entry-points."clbench.loggers"]
    mylogger = "my_package.logging:MyLogger"

and selected with ``clbench run ... --logger mylogger`` (or ``loggers = ["mylogger"]`` in a run
config file). The runner creates one instance per run, on rank 0 only, before training starts,
and feeds it through :class:`clbench.loggers.LoggerSet`; a logger only writes what it is given.
Two step axes exist: ``step`` counts optimizer steps over the whole run (training loss and
learning rate) and ``task`` counts finished tasks (0 = before training; accuracy-matrix rows and
telemetry).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

Axis = Literal["step", "task"]


@dataclass(frozen=True)
class RunInfo:
    """What a logger knows about the run it logs.

    Attributes:
        run_dir: the run directory (``OUT/BENCHMARK/STRATEGY/seed-N``); file-based loggers write
            under it.
        out: the root folder of all runs (``--out``).
        benchmark: benchmark name.
        strategy: strategy name as run.
        seed: run seed.
        config: the resolved run configuration (as written to the run's ``run.toml``).
        resumed: the run continues from a checkpoint (loggers start a new logging session).
    """

    run_dir: Path
    out: Path
    benchmark: str
    strategy: str
    seed: int
    config: dict[str, Any]
    resumed: bool = False

    @property
    def name(self) -> str:
        """A short run name: ``STRATEGY-seedN``."""
        return f"{self.strategy.replace('/', '-').replace(':', '-')}-seed{self.seed}"


class RunLogger:
    """Base class of experiment loggers; subclasses override what their service supports.

    Attributes:
        extra: the ``pip install clbench[EXTRA]`` that installs the library (built-ins only).
        requires: the Python module the logger imports; checked before any run starts.
    """

    extra: ClassVar[str | None] = None
    requires: ClassVar[str | None] = None

    def __init__(self, info: RunInfo) -> None:
        """Open the logging session (create files, start the run on the service).

        Raises anything on failure (missing library, bad credentials): the runner turns it
        into one line before training starts.
        """
        self.info = info

    def log_config(self, config: dict[str, Any]) -> None:
        """Record the resolved run configuration."""

    def log_scalars(self, scalars: dict[str, float], step: int, axis: Axis) -> None:
        """Record scalars at ``step`` on ``axis`` (``step``: optimizer steps, ``task``: tasks finished)."""

    def log_summary(self, metrics: dict[str, float]) -> None:
        """Record the run's final metrics."""

    def log_artifact(self, path: Path) -> None:
        """Attach a file (a report figure)."""

    def close(self, status: str) -> None:
        """Flush and end the session; ``status`` is ``complete`` or ``failed``."""
