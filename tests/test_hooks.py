"""The hook contract: misspelled hooks fail at class definition; ``fit_task`` trains every task and
every run, trained by the runner's loop or not, records steps and timing per task."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from clbench.api import HOOKS, Strategy, TaskStats
from clbench.runner import RunOptions, run


def test_misspelled_hooks_are_rejected_when_the_class_is_defined() -> None:
    with pytest.raises(TypeError, match="'after_tasks'.*did you mean 'after_task'"):
        type("Typo", (Strategy,), {"after_tasks": lambda self, exp: None})
    with pytest.raises(TypeError, match="'eval_start', which is not a hook"):
        type("Prefix", (Strategy,), {"eval_start": lambda self: None})
    with pytest.raises(TypeError, match="'setpu'.*'setup'"):
        type("Swap", (Strategy,), {"setpu": lambda self, backbone: None})
    ok = type("Fine", (Strategy,), {"after_task": lambda self, exp: None, "_after_merge": lambda self: None,
                                    "merge": lambda self: None, "rank": 4})
    assert issubclass(ok, Strategy)
    assert {"fit_task", "after_task", "eval_task_end", "load_state_dict"} <= HOOKS


def test_every_built_in_strategy_passes_the_hook_check() -> None:
    from clbench import registry
    from clbench.api.strategy import check_hook_names

    for plugin in registry.plugins("strategies"):
        cls, _ = registry.get_strategy(plugin.name if plugin.name != "avalanche" else "avalanche:Naive")
        for klass in cls.__mro__:
            if isinstance(klass, type) and issubclass(klass, Strategy):
                check_hook_names(klass)


@pytest.mark.parametrize("strategy", ["zeroshot", "finetune", "avalanche:Naive"])
def test_every_run_records_steps_and_timing_per_task(strategy: str, small_digits: Path, tmp_path: Path) -> None:
    result = run(RunOptions(benchmark=str(small_digits), strategy=strategy, out=tmp_path, progress=False, overrides={"epochs": "1"}))
    tasks = result["tasks"]
    assert tasks and all({"steps", "examples", "train_seconds", "final_loss", "loss_curve"} <= set(t) for t in tasks)
    if strategy == "zeroshot":
        assert all(t["steps"] == 0 and t["final_loss"] is None for t in tasks)
        assert result["budget"]["planned_steps_per_task"] == [0] * len(tasks)
    else:
        assert all(t["steps"] > 0 and t["train_seconds"] > 0 and t["final_loss"] is not None for t in tasks)
        assert result["budget"]["steps_per_task"] == result["budget"]["planned_steps_per_task"]


def test_fit_task_override_replaces_the_loop(small_digits: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A strategy's own ``fit_task`` is what trains; the runner records what it returns."""
    from clbench import registry

    class Counted(Strategy):
        def fit_task(self, data: Any, experience: Any, loop: Any) -> TaskStats:
            stats = loop(data)
            return TaskStats(steps=stats.steps + 1000, examples=stats.examples, train_seconds=stats.train_seconds,
                             final_loss=stats.final_loss, loss_curve=stats.loss_curve)

    real = registry.get_strategy
    monkeypatch.setattr(registry, "get_strategy", lambda name: (Counted, real("finetune")[1]) if name == "finetune" else real(name))
    result = run(RunOptions(benchmark=str(small_digits), strategy="finetune", out=tmp_path, progress=False, overrides={"epochs": "1"}))
    assert all(t["steps"] > 1000 for t in result["tasks"])
