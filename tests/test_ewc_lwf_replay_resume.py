"""ewc, lwf and replay: a run that dies after a checkpoint resumes to the numbers of an
uninterrupted run (EWC's Fisher and anchor and replay's buffer come back from the checkpoint;
LwF's teacher is retaken from the restored weights at the next task start)."""

from __future__ import annotations

from pathlib import Path

import pytest

from clbench import runner
from clbench.runner import RunOptions, run

# One epoch per task keeps the test cheap; resuming does not depend on the training budget.
SETTINGS = {"ewc": {"fisher_samples": "64", "epochs": "1"}, "lwf": {"epochs": "1"}, "replay": {"buffer_size": "40", "epochs": "1"}}


class Crash(Exception):
    """Stands in for the process being killed right after a checkpoint."""


@pytest.mark.parametrize("strategy", sorted(SETTINGS))
def test_run_killed_after_a_checkpoint_resumes_to_identical_metrics(strategy: str, small_digits: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    options = {"benchmark": str(small_digits), "strategy": strategy, "seed": 3, "progress": False, "overrides": SETTINGS[strategy]}
    reference = run(RunOptions(out=tmp_path / "reference", **options))

    original = runner._Run.save_checkpoint

    def save_then_die(self: runner._Run, tasks_done: int) -> None:
        original(self, tasks_done)
        if tasks_done == 2:
            raise Crash

    monkeypatch.setattr(runner._Run, "save_checkpoint", save_then_die)
    with pytest.raises(Crash):
        run(RunOptions(out=tmp_path / "killed", **options))
    monkeypatch.setattr(runner._Run, "save_checkpoint", original)
    resumed = run(RunOptions(out=tmp_path / "killed", resume=True, **options))

    assert resumed["status"] == "complete"
    assert resumed["matrix"]["values"] == reference["matrix"]["values"]
    assert resumed["metrics"] == reference["metrics"]
    assert resumed["telemetry"] == reference["telemetry"]
