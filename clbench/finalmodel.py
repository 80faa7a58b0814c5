"""The final model of a finished run, rebuilt through the run's own resume path (reads only).

``clbench export`` and ``clbench eval RUN`` need the model exactly as the run's last evaluation saw
it. A finished run keeps its last checkpoint (the model tensors that changed since
``strategy.setup`` plus the strategy's state, saved after the last task's ``after_task`` and
evaluation), so the model is rebuilt the way ``--resume`` rebuilds it: the run's recorded options
(``config.json``) rebuild the benchmark, backbone and strategy with the run seed, the checkpoint
identity is checked, and the checkpoint is loaded through the runner. Nothing in the run
directory is written, moved or deleted.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from clbench import checkpoint
from clbench.errors import UsageError
from clbench.preflight import RunOptions
from clbench.results import RESULTS_FILE, load_results

log = logging.getLogger("clbench")

CONFIG_FILE = "config.json"


@dataclass
class FinalModel:
    """A finished run's final model, rebuilt in memory.

    Attributes:
        run_dir: the run directory.
        results: its validated ``results.json``.
        run: the rebuilt run (``run.backbone``, ``run.strategy``, ``run.stream``, ``run.train``).
    """

    run_dir: Path
    results: dict[str, Any]
    run: Any

    @property
    def last_row(self) -> list[float]:
        return list(self.results["matrix"]["values"][-1])


def is_run_directory(path: Path) -> bool:
    """A folder holding a run (``results.json`` and ``config.json``)."""
    return path.is_dir() and (path / RESULTS_FILE).is_file() and (path / CONFIG_FILE).is_file()


def recorded_options(run_dir: Path, *, device: str = "cpu", data_root: Path | None = None) -> RunOptions:
    """The options a run was started with (``config.json``), pointed at where the run lies now.

    The output root is taken from the folder's place (``OUT/BENCHMARK/STRATEGY/seed-N``), so a run
    directory that was moved or copied is still found; ``data_root`` replaces the recorded one
    when given.

    Raises:
        UsageError: no readable ``config.json`` with the run's options.
    """
    path = run_dir / CONFIG_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))["options"]
        known = {f.name for f in fields(RunOptions)}
        options = RunOptions(**{k: v for k, v in raw.items() if k in known})
    except FileNotFoundError:
        raise UsageError(f"{run_dir} is not a run directory (no {CONFIG_FILE}); give OUT/BENCHMARK/STRATEGY/seed-N") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"{path} does not hold a run's options ({type(exc).__name__}); it is damaged or not clbench's") from None
    options.out = run_dir.resolve().parents[2]
    recorded_root = Path(options.data_root) if options.data_root else None
    options.data_root = data_root if data_root is not None else recorded_root
    options.device, options.progress = device, False
    options.resume, options.overwrite = True, False
    options.fsdp = False  # rebuilt on one process: the checkpoint holds whole tensors whatever the run sharded
    return options


def load_final_model(run_dir: Path, *, device: str = "cpu", data_root: Path | None = None) -> FinalModel:
    """Rebuild a complete run's final model from its last checkpoint.

    Raises:
        UsageError: not a complete run, no checkpoint, or a checkpoint made with other settings.
        ResultsError: an unreadable ``results.json``.
        MissingAssetError, DataError: the run's data or weights are missing here.
    """
    from clbench.runner import _Run

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UsageError(f"{run_dir}: no such run directory")
    results = load_results(run_dir / RESULTS_FILE)
    if results["status"] != "complete":
        raise UsageError(f"{run_dir} has not finished (status {results['status']!r}); finish it with clbench run ... --resume first")
    options = recorded_options(run_dir, device=device, data_root=data_root)
    run = _Run(options)
    if run.run_dir.resolve() != run_dir.resolve():
        raise UsageError(f"{run_dir}: its config.json describes the run in {run.run_dir}; the folder was renamed, so its options no longer match")
    folder = run_dir / "checkpoint"
    pointer = checkpoint.read_pointer(folder, len(run.stream.tasks))
    if pointer is None or int(pointer["tasks_done"]) != len(run.stream.tasks):
        raise UsageError(f"{run_dir} has no checkpoint after its last task ({folder / checkpoint.POINTER}); its final model cannot be rebuilt")
    if pointer["progress"]["identity"] != run.identity():
        raise UsageError(f"{run_dir}: the checkpoint was made with other settings than this clbench rebuilds (benchmark or strategy changed)")
    run.restore_state(folder, pointer)
    run.rows = pointer["progress"]["rows"]
    run.backbone.model.eval()
    log.info("rebuilt the final model of %s (after task %d)", run_dir, pointer["tasks_done"])
    return FinalModel(run_dir=run_dir, results=results, run=run)
