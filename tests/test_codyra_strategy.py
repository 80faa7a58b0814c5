"""The ``codyra`` strategy through the real runner: telemetry, pruning wiring, a plain model after
every task (saved and reloaded into a fresh backbone), and a killed run resuming identically."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from clbench import registry
from clbench.api import RunContext
from clbench.data import build_stream
from clbench.strategies.codyra.layer import CoDyRALinear
from clbench.runner import RunOptions, run
from clbench.strategies.codyra import CoDyRA, CoDyRAConfig
from clbench.training import train_task


def _run(bench: Path, out: Path, **overrides: str) -> dict:
    return run(RunOptions(benchmark=str(bench), strategy="codyra", out=out, seed=3, progress=False, overrides=dict(overrides)))


def test_runs_on_digits_with_rank_and_drift_telemetry(small_digits: Path, tmp_path: Path) -> None:
    results = _run(small_digits, tmp_path)
    assert results["status"] == "complete"
    values = np.array(results["matrix"]["values"])
    assert (np.diag(values[1:]) > values[0] + 0.3).all()  # each task is learned
    assert results["backbone"]["parameters"] == (64 * 32 + 32) + (32 * 6 + 6)  # merged: the plain MLP
    reports = [t["codyra"] for t in results["telemetry"]]
    assert [t["task"] for t in results["telemetry"]] == ["a", "b", "c"]
    cumulative = []
    for report in reports:
        assert set(report["effective_rank"]) == {"fc1"} and 0 <= report["effective_rank"]["fc1"] <= 16
        assert report["effective_rank_grid"] == {"rows": ["fc*"], "columns": [1], "matrix": [[report["effective_rank"]["fc1"]]]}
        assert report["delta_w_fro_total"] == pytest.approx(report["delta_w_fro"]["fc1"]) and report["delta_w_fro_total"] > 0
        assert report["prox_steps"] > 0 and report["kappa_max"] == 0.005  # the official κ_max, not rescaled
        cumulative.append(report["cumulative_drift_fro"])
    assert cumulative[0] == pytest.approx(reports[0]["delta_w_fro_total"])
    # the triangle inequality bounds the drift by the sum of the per-task updates
    assert cumulative[-1] <= sum(r["delta_w_fro_total"] for r in reports) + 1e-9
    # pruning itself is covered by the huge-threshold test below: the official κ_max barely moves
    # a N(0, 1) gate within these short tasks


def test_a_huge_threshold_prunes_every_rank_so_nothing_is_merged(small_digits: Path, tmp_path: Path) -> None:
    results = _run(small_digits, tmp_path, kappa_max="100.0", kappa_reference_steps="0", epochs="1")
    for entry in results["telemetry"]:
        report = entry["codyra"]
        assert report["effective_rank"] == {"fc1": 0} and report["effective_rank_fraction"] == 0.0
        assert report["delta_w_fro_total"] == 0.0 and report["cumulative_drift_fro"] == 0.0


def _bound_backbone(bench: Path) -> tuple[object, object]:
    spec, loaders = registry.load_benchmark(str(bench))
    stream = build_stream(spec, extra_loaders=loaders)
    backbone = registry.build_backbone(spec.backbone)
    backbone.bind(stream)
    return backbone, stream


def test_model_saved_after_a_task_loads_into_a_fresh_plain_backbone(small_digits: Path) -> None:
    torch.manual_seed(0)
    backbone, stream = _bound_backbone(small_digits)
    spec, _ = registry.load_benchmark(str(small_digits))
    ctx = RunContext(stream=stream, train=spec.train, device=torch.device("cpu"), seed=0)
    strategy = CoDyRA(CoDyRAConfig(), ctx)
    strategy.setup(backbone)
    plain_types = [(n, type(m)) for n, m in backbone.model.named_modules()]
    experience = stream.tasks[0]
    strategy.before_task(experience)
    assert isinstance(backbone.model.fc1, CoDyRALinear)
    train_task(strategy, backbone, experience.train, experience, spec.train, torch.Generator().manual_seed(0), progress=False)
    batch = backbone.collate([experience.test[i] for i in range(16)])
    backbone.model.eval()
    with torch.no_grad():
        before = backbone.model(batch["x"])
    strategy.after_task(experience)
    assert [(n, type(m)) for n, m in backbone.model.named_modules()] == plain_types
    buffer = io.BytesIO()
    torch.save(backbone.model.state_dict(), buffer)
    buffer.seek(0)
    fresh, _ = _bound_backbone(small_digits)
    fresh.model.load_state_dict(torch.load(buffer, weights_only=True), strict=True)
    fresh.model.eval()
    with torch.no_grad():
        assert (fresh.model(batch["x"]) - before).abs().max() < 1e-5
        assert type(fresh.model.fc1) is nn.Linear


def test_killed_run_resumes_to_identical_numbers_and_telemetry(small_digits: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = {"epochs": "1", "prox": "soft", "rank": "4"}  # the paper's soft-threshold variant, on the way
    reference = _run(small_digits, tmp_path / "reference", **settings)
    merge = CoDyRA.after_task
    calls = []

    def crash_on_second_task(self: CoDyRA, experience: object) -> None:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed after the first task's checkpoint
        merge(self, experience)

    monkeypatch.setattr(CoDyRA, "after_task", crash_on_second_task)
    with pytest.raises(KeyboardInterrupt):
        _run(small_digits, tmp_path / "killed", **settings)
    monkeypatch.setattr(CoDyRA, "after_task", merge)
    resumed = run(RunOptions(benchmark=str(small_digits), strategy="codyra", out=tmp_path / "killed", seed=3, progress=False, resume=True,
                             overrides=settings))
    assert "resumed" in (Path(resumed["_path"]).parent / "run.log").read_text()
    assert resumed["matrix"]["values"] == reference["matrix"]["values"]
    assert resumed["telemetry"] == reference["telemetry"]  # the drift bank came back with the checkpoint
    assert all(0 <= t["codyra"]["effective_rank"]["fc1"] <= 4 for t in resumed["telemetry"])
