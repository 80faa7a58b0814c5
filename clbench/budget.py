"""The training budget of a run: steps per task, batch size, learning rate, optimizer, schedule.

A result means little without the budget that produced it, and strategies may override the
benchmark's training settings (per backbone kind), so the runner logs the resolved budget when a
run starts and records it in ``results.json`` (``budget``): the settings, which of them the
strategy changed from the benchmark's defaults, the planned steps per task and the steps each
task actually took. Plain Python (no torch): reports read the record back.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

# Settings are clbench.api.benchmark.TrainSettings; not imported, so reports can use this module
# without importing clbench.api (whose package imports torch).
TrainSettings = Any

BUDGET_KEYS = ("epochs", "iterations", "batch_size", "grad_accum", "lr", "optimizer", "scheduler", "weight_decay", "max_grad_norm", "amp")
"""Training settings that make up the budget (what ``clbench show`` and reports print)."""


def steps_per_task(n_examples: int, settings: TrainSettings) -> int:
    """Optimizer steps for a task of ``n_examples`` under ``settings``.

    ``iterations`` when set, else ``epochs × ⌈⌈n / batch_size⌉ / grad_accum⌉``.
    """
    if settings.iterations is not None:
        return settings.iterations
    batches = math.ceil(n_examples / settings.batch_size)
    return settings.epochs * math.ceil(batches / settings.grad_accum)


def overrides(train: TrainSettings, default: TrainSettings) -> dict[str, dict[str, Any]]:
    """Budget settings the strategy changed: ``{key: {"benchmark": default, "run": value}}``."""
    mine, theirs = dataclasses.asdict(train), dataclasses.asdict(default)
    return {k: {"benchmark": theirs[k], "run": mine[k]} for k in BUDGET_KEYS if mine[k] != theirs[k]}


def budget_record(train: TrainSettings, default: TrainSettings, planned: Sequence[int], tasks: Sequence[dict[str, Any]],
                  trains: bool = True) -> dict[str, Any]:
    """The ``budget`` entry of ``results.json``.

    Args:
        train: the run's resolved settings.
        default: the benchmark's settings (before the strategy's overrides).
        planned: steps per task from each task's own training-set size (joint and replay train
            on more examples, so their actual steps may differ).
        tasks: the runner's per-task records so far (``steps``, ``examples`` when trained).
        trains: ``False`` for strategies that never train (every step count is 0).
    """
    settings = dataclasses.asdict(train)
    return {
        **{k: settings[k] for k in BUDGET_KEYS},
        "examples_per_step": train.batch_size * train.grad_accum,
        "planned_steps_per_task": [int(p) if trains else 0 for p in planned],
        "steps_per_task": [int(t.get("steps", 0)) for t in tasks],
        "train_examples_per_task": [t.get("examples") for t in tasks],
        "strategy_overrides": overrides(train, default),
    }


def describe(budget: dict[str, Any]) -> str:
    """One line: ``60 steps/task (5 epochs × batch 32), lr 0.001, adamw, constant schedule``."""
    steps = budget.get("steps_per_task") or budget.get("planned_steps_per_task") or []
    counts = sorted(set(steps))
    if not counts:
        step_text = "no steps"
    elif len(counts) == 1:
        step_text = f"{counts[0]} steps/task"
    else:
        step_text = f"{counts[0]}–{counts[-1]} steps/task"
    how = f"{budget['iterations']} iterations" if budget.get("iterations") is not None else f"{budget.get('epochs')} epochs"
    accum = f" × {budget['grad_accum']} accumulated" if budget.get("grad_accum", 1) != 1 else ""
    text = f"{step_text} ({how} of batch {budget.get('batch_size')}{accum}), lr {budget.get('lr'):g}, {budget.get('optimizer')}, {budget.get('scheduler')} schedule"
    changed = budget.get("strategy_overrides") or {}
    if changed:
        text += "; strategy overrides " + ", ".join(f"{k} {v['benchmark']}→{v['run']}" for k, v in changed.items())
    return text
