"""Sweeps: a grid of independent runs (strategies × settings × seeds) on one benchmark.

:func:`expand_grid` turns ``-s a,b --seed 0,1 -S lr=1e-4,5e-4 -S rank=4,8`` into one
:class:`~clbench.preflight.RunOptions` per (strategy, settings, seed), every one checked by
:func:`clbench.preflight.preflight` before anything runs. :func:`run_sweep` then runs each with
``--resume`` semantics: a complete run is skipped (its recorded identity must match, see
:mod:`clbench.identity`), a checkpointed one resumes, a missing one starts. Runs go to an
executor: ``local`` runs them one after another in this process; ``ray`` submits each as a Ray
task with declared CPU/GPU resources (``ray.remote(num_cpus=..., num_gpus=...)``) so Ray's
scheduler packs them onto a machine or a cluster (``ray:ADDRESS`` joins a running cluster).
One failing run never stops the others; the failures are returned with their one-line reasons.

The scheduling, placement and retries are Ray's: clbench only describes runs and reads results.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clbench.errors import ClbenchError, UsageError

__all__ = ["Outcome", "execute_one", "expand_grid", "import_ray", "parse_executor", "run_sweep", "split_values"]


def split_values(text: str) -> list[str]:
    """Comma-separated grid values; commas inside ``[...]`` belong to one (list) value."""
    values, depth, current = [], 0, ""
    for char in text:
        depth += (char == "[") - (char == "]")
        if char == "," and depth == 0:
            values.append(current.strip())
            current = ""
        else:
            current += char
    values.append(current.strip())
    if not all(values):
        raise UsageError(f"-S value list {text!r} has an empty item; separate values with single commas")
    return values


def expand_grid(assignments: Sequence[str], strategies: dict[str, type], requested: dict[str, str], seeds: Sequence[int],
                base: dict[str, Any]) -> list[Any]:
    """One :class:`RunOptions` per (strategy, settings point, seed), without duplicates.

    ``assignments`` are raw ``-S key=v1,v2`` strings; the grid is their cartesian product. Each
    point is routed to the strategies that have its keys (:func:`clbench.config.split_overrides`),
    so a key only some strategies have does not multiply the others' runs.
    """
    from clbench.config import parse_assignments, split_overrides
    from clbench.preflight import RunOptions

    axes = parse_assignments(assignments)
    keys = list(axes)
    points = [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(split_values(axes[k]) for k in keys))]
    plans, seen = [], set()
    for point in points:
        routed = split_overrides(point, strategies)
        for name in strategies:
            for seed in seeds:
                key = (name, tuple(sorted(routed[name].items())), seed)
                if key in seen:
                    continue
                seen.add(key)
                plans.append(RunOptions(strategy=requested[name], overrides=routed[name], seed=seed, resume=True, **base))
    return plans


def parse_executor(text: str) -> tuple[str, str | None]:
    """``local``, ``ray`` or ``ray:ADDRESS`` → (kind, address)."""
    kind, _, address = text.partition(":")
    if kind == "local" and not address:
        return "local", None
    if kind == "ray":
        return "ray", address or None
    raise UsageError(f"unknown --executor {text!r}; use local, ray or ray:ADDRESS (e.g. ray:auto or ray:10.0.0.1:6379)")


@dataclass
class Outcome:
    """What became of one run of a sweep."""

    strategy: str
    seed: int
    settings: dict[str, str]
    status: str  # "skipped" (already complete), "done", "failed"
    seconds: float = 0.0
    message: str = ""
    results: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        """The strategy and its grid settings (``lora lr=0.001,rank=4``)."""
        return " ".join([self.strategy, ",".join(f"{k}={v}" for k, v in sorted(self.settings.items()))]).strip()

    @property
    def label(self) -> str:
        return f"{self.name} seed {self.seed}"


def _outcome(options: Any, status: str, seconds: float = 0.0, message: str = "", results: dict[str, Any] | None = None) -> Outcome:
    return Outcome(options.strategy, options.seed, dict(options.overrides), status, seconds, message, results)


def execute_one(options: Any) -> Outcome:
    """Run (or skip, or resume) one run of a sweep; never raises for a run's own failure."""
    from clbench.preflight import existing_complete
    from clbench.runner import run

    start = time.perf_counter()
    try:
        existing = existing_complete(Path(options.out), options)
        if existing is not None:
            return _outcome(options, "skipped", results=existing)
        results = run(options)
        return _outcome(options, "done", time.perf_counter() - start, results=results)
    except ClbenchError as exc:
        return _outcome(options, "failed", time.perf_counter() - start, " ".join(str(exc).split()) or type(exc).__name__)
    except Exception as exc:  # a bug in one run must not stop the sweep; its type and message are listed at the end
        return _outcome(options, "failed", time.perf_counter() - start, f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}")


def _local(plans: Sequence[Any], notify: Callable[[Outcome], None]) -> list[Outcome]:
    outcomes = []
    for options in plans:
        outcomes.append(execute_one(options))
        notify(outcomes[-1])
    return outcomes


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UsageError("--executor ray needs Ray: pip install 'clbench[ray]'") from None
    return ray


def _ray(plans: Sequence[Any], notify: Callable[[Outcome], None], address: str | None, cpus: float, gpus: float | None) -> list[Outcome]:
    ray = import_ray()
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    if gpus is None:  # --device auto: a GPU per run where the cluster has GPUs (a task without one sees none)
        gpus = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
    task = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=0)(execute_one)
    pending = {task.remote(dataclasses.replace(options, progress=False)): i for i, options in enumerate(plans)}
    outcomes: list[Outcome | None] = [None] * len(plans)
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            index = pending.pop(ref)
            try:
                outcome = ray.get(ref)
            except Exception as exc:  # the worker died (killed, out of memory): Ray raises here; the run stays resumable
                outcome = _outcome(plans[index], "failed", message=f"Ray task failed: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:300]}")
            outcomes[index] = outcome
            notify(outcome)
    return [o for o in outcomes if o is not None]


def run_sweep(plans: Sequence[Any], executor: str = "local", cpus: float = 1.0, gpus: float | None = 0.0,
              notify: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    """Run every plan on the executor; returns one :class:`Outcome` per plan, in plan order
    (``local``) or completion order (``ray``)."""
    kind, address = parse_executor(executor)
    report = notify or (lambda outcome: None)
    if kind == "local":
        return _local(plans, report)
    return _ray(plans, report, address, cpus, gpus)
