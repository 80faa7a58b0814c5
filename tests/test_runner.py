"""The runner on a real (small) benchmark: matrix layout, determinism, results schema, resume rules."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from clbench import metrics
from clbench.errors import UsageError
from clbench.example_scores import ExampleScores, matches_matrix
from clbench.results import SCHEMA, load_results, trained_matrix
from clbench.runner import RunOptions, run


def _run(bench: Path, out: Path, strategy: str = "finetune", seed: int = 0, **kw) -> dict:
    return run(RunOptions(benchmark=str(bench), strategy=strategy, out=out, seed=seed, progress=False, **kw))


def test_matrix_rows_metrics_and_schema(small_digits: Path, tmp_path: Path) -> None:
    results = _run(small_digits, tmp_path)
    on_disk = load_results(Path(results["_path"]))
    assert on_disk["schema"] == SCHEMA and on_disk["status"] == "complete"
    values = on_disk["matrix"]["values"]
    assert len(values) == 4 and all(len(r) == 3 for r in values)
    assert on_disk["matrix"]["rows"] == ["init", "after a", "after b", "after c"]
    R = np.array(values)
    diagonal = np.diag(R[1:])
    assert diagonal.mean() > 0.8 and (diagonal > R[0] + 0.3).all()  # each task is learned
    assert R[3, 0] < 0.5  # and class-incremental fine-tuning forgets it
    assert on_disk["metrics"]["bwt"] == pytest.approx(metrics.bwt(R))
    assert on_disk["metrics"]["forgetting_chaudhry"] == pytest.approx(metrics.forgetting_chaudhry(trained_matrix(on_disk)))
    assert [t["task"] for t in on_disk["tasks"]] == ["a", "b", "c"] and all(t["steps"] > 0 for t in on_disk["tasks"])
    assert on_disk["strategy"] | {"config": None} == {"name": "finetune", "package": "clbench", "version": on_disk["strategy"]["version"], "config": None}
    assert on_disk["environment"]["torch"] and on_disk["backbone"]["spec"] == "mlp:32"
    run_dir = Path(results["_path"]).parent
    assert {"results.json", "config.json", "run.log", "checkpoint", "examples.npz"} <= {p.name for p in run_dir.iterdir()}
    assert not list(run_dir.rglob("*.tmp"))
    # Plasticity beside forgetting, intervals from the per-example scores, the budget actually run.
    assert on_disk["metrics"]["learning_accuracy"] == pytest.approx(diagonal.mean())
    assert on_disk["metrics"]["plasticity_gain"] == pytest.approx((diagonal - R[0]).mean())
    for name, (low, high) in on_disk["intervals"].items():
        assert low <= on_disk["metrics"][name] <= high, name
    assert on_disk["plasticity"] | {"rule": None} == {"learned": True, "tasks_learned": 3, "tasks": 3, "judged_by": "95% bootstrap interval", "rule": None}
    scores = ExampleScores.load(run_dir / "examples.npz")
    assert scores.is_complete() and matches_matrix(scores, values)
    assert on_disk["examples"] == scores.summary() and on_disk["examples"]["encodings"] == ["bits"] * 3
    assert (run_dir / "examples.npz").stat().st_size < 1500  # 4 rows x ~270 test digits, bit-packed
    steps = [t["steps"] for t in on_disk["tasks"]]
    assert on_disk["budget"]["steps_per_task"] == steps == on_disk["budget"]["planned_steps_per_task"]
    assert on_disk["budget"] | {"train_examples_per_task": None} == {
        "epochs": 5, "iterations": None, "batch_size": 32, "grad_accum": 1, "lr": 0.01, "optimizer": "adamw", "scheduler": "constant",
        "weight_decay": 0.0, "max_grad_norm": 0.0, "amp": "none", "examples_per_step": 32, "planned_steps_per_task": steps,
        "steps_per_task": steps, "train_examples_per_task": None, "strategy_overrides": {}}
    assert "budget 45 steps/task (5 epochs of batch 32), lr 0.01, adamw, constant schedule" in (run_dir / "run.log").read_text()


def test_same_seed_same_numbers_other_seed_other_numbers(small_digits: Path, tmp_path: Path) -> None:
    a = _run(small_digits, tmp_path / "a", seed=1)
    b = _run(small_digits, tmp_path / "b", seed=1)
    c = _run(small_digits, tmp_path / "c", seed=2)
    assert a["matrix"]["values"] == b["matrix"]["values"] and a["metrics"] == b["metrics"]
    assert a["matrix"]["values"] != c["matrix"]["values"]


def test_zeroshot_rows_equal_row_zero_and_joint_keeps_old_tasks(small_digits: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import clbench.runner as runner_module

    passes = []
    real_evaluate = runner_module.evaluate
    monkeypatch.setattr(runner_module, "evaluate", lambda *a, **k: passes.append(1) or real_evaluate(*a, **k))
    zs = _run(small_digits, tmp_path, strategy="zeroshot")
    assert len(passes) == 1, "zeroshot evaluates row 0 once; later rows are copies"
    assert ExampleScores.load(Path(zs["_path"]).parent / "examples.npz").is_complete()
    assert all(row == zs["matrix"]["values"][0] for row in zs["matrix"]["values"])
    assert zs["tasks"][0]["steps"] == 0 and zs["tasks"][0]["train_seconds"] == 0  # every run records steps; zero-shot takes none
    # No forgetting, because nothing was learned: the verdict says so.
    assert zs["metrics"]["forgetting_chaudhry"] == 0.0 and zs["metrics"]["plasticity_gain"] == 0.0
    assert zs["plasticity"]["learned"] is False and zs["budget"]["steps_per_task"] == [0, 0, 0]
    joint = np.array(_run(small_digits, tmp_path, strategy="joint")["matrix"]["values"])
    assert joint[3].min() > 0.8  # trained on the union: nothing forgotten


def test_lora_trains_only_adapters_and_head(small_digits: Path, tmp_path: Path) -> None:
    results = _run(small_digits, tmp_path, strategy="lora", overrides={"rank": "2", "merge_after_task": "true"})
    assert results["backbone"]["trainable_parameters"] == 2 * (64 + 32) + (32 * 6 + 6)
    assert results["telemetry"][0]["adapted_layers"] == 1
    assert results["telemetry"][-1]["adapter_update_norm"] == 0.0  # merged and restarted after each task


def test_existing_run_needs_resume_or_overwrite(small_digits: Path, tmp_path: Path) -> None:
    first = _run(small_digits, tmp_path)
    with pytest.raises(UsageError, match="already holds a run; pass --resume"):
        _run(small_digits, tmp_path)
    assert _run(small_digits, tmp_path, resume=True)["updated"] == first["updated"]  # complete: returned as is
    with pytest.raises(UsageError, match=r"already finished with other settings \(backbone\)"):
        _run(small_digits, tmp_path, resume=True, backbone="mlp:16")
    again = _run(small_digits, tmp_path, overwrite=True)
    assert again["matrix"]["values"] == first["matrix"]["values"]


def test_resume_refuses_a_checkpoint_from_other_settings(small_digits: Path, tmp_path: Path) -> None:
    results = _run(small_digits, tmp_path)
    path = Path(results["_path"])
    data = json.loads(path.read_text())
    data["status"] = "running"
    path.write_text(json.dumps(data))
    with pytest.raises(UsageError, match="different backbone"):
        _run(small_digits, tmp_path, resume=True, backbone="mlp:16")


def test_strategy_rejects_unsupported_backbone_kind(small_digits: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from clbench import registry

    cls, _ = registry.get_strategy("finetune")
    monkeypatch.setattr(cls, "backbone_kinds", frozenset({"llm"}))
    with pytest.raises(UsageError, match="supports llm backbones, not classic .*; strategies for classic backbones: .*lora"):
        _run(small_digits, tmp_path)
    assert not (tmp_path / "digits-small").exists()


def test_overwrite_that_cannot_start_keeps_the_finished_run(small_digits: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from clbench import registry

    finished = _run(small_digits, tmp_path)
    run_dir = Path(finished["_path"]).parent
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    cls, _ = registry.get_strategy("finetune")
    monkeypatch.setattr(cls, "backbone_kinds", frozenset({"llm"}))
    with pytest.raises(UsageError, match="supports llm backbones"):
        _run(small_digits, tmp_path, overwrite=True)
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == before
