"""What a run leaves when it stops after its first checkpoint, and how an interrupted --overwrite is finished.

The battery (test_battery.py) covers runs that stop *before* their first checkpoint (nothing is
left, the earlier run is back). Here: a run that stops later stays resumable and is never marked
complete; an --overwrite keeps the earlier run aside until the new one completes; the staging a
killed process leaves is finished by the next run of that directory.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch

from battery_support import BENCH, TINY_BENCH, fail_writes
from clbench.errors import StorageError, TrainingError
from clbench.rundir import RunDirectory, run_state
from clbench.runner import RunOptions, run
from clbench.validation import confined, safe_folder_name


@pytest.fixture
def bench(tmp_path: Path) -> Path:
    path = tmp_path / f"{BENCH}.toml"
    path.write_text(TINY_BENCH, encoding="utf-8")
    return path


def _options(bench: Path, out: Path, **kwargs: Any) -> RunOptions:
    return RunOptions(benchmark=str(bench), strategy="finetune", seed=0, out=out, progress=False, **kwargs)


def _nan_from_task(monkeypatch: pytest.MonkeyPatch, task: int) -> None:
    from clbench.strategies.finetune import FineTune

    real = FineTune.loss

    def loss(self: Any, batch: Any, experience: Any) -> torch.Tensor:
        value = real(self, batch, experience)
        return value * float("nan") if experience.index + 1 >= task else value

    monkeypatch.setattr(FineTune, "loss", loss)


def test_non_finite_loss_after_a_checkpoint_stops_and_is_not_complete(bench: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _nan_from_task(monkeypatch, 2)
    with pytest.raises(TrainingError, match=r"training loss became nan in task 2 \(b\) at step 1 of \d+; .*1 task\(s\) are checkpointed in .*"
                                            r"continue with --resume"):
        run(_options(bench, tmp_path / "runs"))
    run_dir = tmp_path / "runs" / BENCH / "finetune" / "seed-0"
    saved = json.loads((run_dir / "results.json").read_text())
    assert saved["status"] == "running" and saved["matrix"]["values"][2] is None and saved["metrics"] == {}
    assert run_state(run_dir) == "checkpointed"


def test_skip_policy_skips_non_finite_batches_and_records_them(bench: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from clbench.strategies.finetune import FineTune

    real = FineTune.loss
    calls = {"n": 0}

    def loss(self: Any, batch: Any, experience: Any) -> torch.Tensor:
        calls["n"] += 1
        value = real(self, batch, experience)
        return value * float("inf") if calls["n"] == 2 else value

    monkeypatch.setattr(FineTune, "loss", loss)
    results = run(_options(bench, tmp_path / "runs", overrides={"nonfinite_loss": "skip"}))
    assert results["status"] == "complete" and results["train"]["nonfinite_loss"] == "skip"
    assert results["tasks"][0]["skipped_steps"] == 1 and "skipped_steps" not in results["tasks"][1]


def test_disk_full_after_a_checkpoint_keeps_the_run_resumable(bench: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reference = run(_options(bench, tmp_path / "reference"))
    with monkeypatch.context() as patch:
        fail_writes(patch, errno.ENOSPC, "task-002.safetensors")
        with pytest.raises(StorageError, match="task-002.safetensors: the disk is full; free some space and rerun; 1 task"):
            run(_options(bench, tmp_path / "runs"))
    run_dir = tmp_path / "runs" / BENCH / "finetune" / "seed-0"
    assert sorted(p.name for p in (run_dir / "checkpoint").iterdir()) == ["checkpoint.json", "task-001.safetensors"]
    resumed = run(_options(bench, tmp_path / "runs", resume=True))
    assert resumed["matrix"]["values"] == reference["matrix"]["values"] and resumed["metrics"] == reference["metrics"]


def test_overwrite_keeps_the_earlier_run_aside_until_the_new_one_completes(bench: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "runs"
    first = run(_options(bench, out))
    run_dir = out / BENCH / "finetune" / "seed-0"
    previous = run_dir.parent / ".seed-0.previous"
    original = (run_dir / "results.json").read_bytes()
    with monkeypatch.context() as patch:
        _nan_from_task(patch, 3)
        with pytest.raises(TrainingError, match=f"the run it replaces stays in {previous} until this one completes"):
            run(_options(bench, out, overwrite=True, backbone="mlp:24"))
    assert (previous / "results.json").read_bytes() == original and run_state(run_dir) == "checkpointed"
    from clbench.report import find_results

    assert find_results([out]) == [run_dir / "results.json"]
    # A second --overwrite replaces the unfinished one, and the earlier finished run still waits aside.
    with monkeypatch.context() as patch:
        fail_writes(patch, errno.ENOSPC, "task-001.safetensors")
        with pytest.raises(StorageError, match="the earlier run in .* was restored"):
            run(_options(bench, out, overwrite=True, backbone="mlp:20"))
    assert (previous / "results.json").read_bytes() == original and run_state(run_dir) == "checkpointed"
    assert not (run_dir.parent / ".seed-0.replaced").exists()
    second = run(_options(bench, out, overwrite=True, backbone="mlp:20"))
    assert not previous.exists() and second["backbone"]["spec"] == "mlp:20" != first["backbone"]["spec"]  # -S values would name another folder


def test_interrupted_overwrite_staging_is_finished_by_the_next_run(bench: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    run(_options(bench, out))
    run_dir = out / BENCH / "finetune" / "seed-0"
    original = (run_dir / "results.json").read_bytes()
    # What kill -9 during an --overwrite, before its first checkpoint, leaves: the old run aside, a started new one, a stale lock.
    os.rename(run_dir, run_dir.parent / ".seed-0.previous")
    run_dir.mkdir()
    (run_dir / "results.json").write_text(json.dumps({"status": "running"}))
    (run_dir.parent / ".seed-0.lock").write_text(json.dumps({"pid": 999999, "host": "gone", "started": "then"}))
    with RunDirectory(run_dir, "resume"):
        assert (run_dir / "results.json").read_bytes() == original
    assert sorted(p.name for p in run_dir.parent.iterdir()) == ["seed-0"]
    # ... and what it leaves when killed after the new run completed but before the old one was deleted.
    (run_dir.parent / ".seed-0.previous").mkdir()
    with RunDirectory(run_dir, "resume"):
        pass
    assert sorted(p.name for p in run_dir.parent.iterdir()) == ["seed-0"]


def test_a_new_run_in_a_folder_with_foreign_files_removes_only_its_own(bench: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = tmp_path / "runs" / BENCH / "finetune" / "seed-0"
    run_dir.mkdir(parents=True)
    (run_dir / "notes.txt").write_text("mine")
    fail_writes(monkeypatch, errno.ENOSPC, "results.json")
    with pytest.raises(StorageError, match="files it created were removed"):
        run(_options(bench, tmp_path / "runs"))
    assert [p.name for p in run_dir.iterdir()] == ["notes.txt"]


def test_names_from_files_stay_inside_the_output_folder(tmp_path: Path) -> None:
    assert safe_folder_name("../escaped-report") == "-escaped-report"
    assert safe_folder_name("/etc/cron.d") == "-etc-cron.d"
    assert safe_folder_name("..") == "unnamed" and safe_folder_name("") == "unnamed"
    assert safe_folder_name("a\x00b\nc") == "a-b-c" and len(safe_folder_name("x" * 5000)) == 100
    (tmp_path / "out").mkdir()
    os.symlink("/tmp", tmp_path / "out" / "link")
    with pytest.raises(Exception, match="would be written outside"):
        confined(tmp_path / "out", tmp_path / "out" / "link" / "x", "report")
    assert confined(tmp_path / "out", tmp_path / "out" / "a", "report") == tmp_path / "out" / "a"
