"""The coso strategy on real components: orthogonality of task 2's update to task 1's subspace,
telemetry, presets, the task-head loss, exact resume, and end-to-end runs on digits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from clbench import registry
from clbench.api import RunContext
from clbench.data import build_stream
from clbench.errors import UsageError
from clbench.runner import RunOptions, run
from clbench.strategies.coso import CoSO, CoSOConfig
from clbench.training import train_task


def _setup(bench: Path, backbone_spec: str, iterations: int = 12, **config: object) -> tuple[CoSO, object, object]:
    spec, _ = registry.load_benchmark(str(bench))
    stream = build_stream(spec)
    backbone = registry.build_backbone(backbone_spec)
    backbone.bind(stream)
    settings = spec.train.updated(iterations=iterations, lr=0.01)
    torch.manual_seed(0)
    ctx = RunContext(stream=stream, train=settings, device=torch.device("cpu"), seed=0, benchmark=spec.name)
    strategy = CoSO(CoSOConfig(**config), ctx)  # type: ignore[arg-type]
    strategy.setup(backbone)
    return strategy, stream, settings


def _train(strategy: CoSO, stream: object, settings: object, task: int) -> None:
    exp = stream.tasks[task]  # type: ignore[attr-defined]
    strategy.before_task(exp)
    train_task(strategy, strategy.backbone, exp.train, exp, settings, torch.Generator().manual_seed(task), progress=False)  # type: ignore[arg-type]
    strategy.after_task(exp)


@pytest.mark.parametrize("svd", ["full", "randomized"])
def test_task_two_update_has_no_component_in_task_one_subspace(small_digits: Path, svd: str) -> None:
    strategy, stream, settings = _setup(small_digits, "mlp:32", proj_rank=4, sketch_rank=8, svd=svd)
    assert list(strategy.layers) == ["fc1"]
    _train(strategy, stream, settings, 0)
    history = strategy.history["fc1"].clone()
    assert 0 < history.shape[1] <= 8
    before = strategy.layers["fc1"].weight.detach().clone()
    _train(strategy, stream, settings, 1)
    delta = strategy.layers["fc1"].weight.detach() - before
    assert float(delta.norm()) > 1e-3
    assert float((history.t() @ delta).norm()) <= 1e-5 * float(delta.norm())
    assert strategy.history["fc1"].shape[1] > history.shape[1]
    assert max(strategy.orthogonality_error().values()) < 1e-4  # appended without QR, still orthonormal

    tele = strategy.telemetry()
    assert tele["coso_history_dims"] == {"fc1": strategy.history["fc1"].shape[1]}
    assert tele["coso_appended_dims"]["fc1"] == strategy.history["fc1"].shape[1] - history.shape[1]
    assert 0.0 < tele["coso_captured_energy"]["fc1"] < 0.98
    assert tele["coso_history_fraction"]["fc1"] == pytest.approx(tele["coso_history_dims"]["fc1"] / 32, abs=1e-6)
    json.dumps(tele)


def test_without_history_the_update_touches_the_old_subspace(small_digits: Path) -> None:
    """Control for the test above: with the history dropped, task 2 moves along task 1's directions."""
    strategy, stream, settings = _setup(small_digits, "mlp:32", proj_rank=4, sketch_rank=8)
    _train(strategy, stream, settings, 0)
    history = strategy.history["fc1"].clone()
    strategy.history["fc1"] = history[:, :0]
    before = strategy.layers["fc1"].weight.detach().clone()
    _train(strategy, stream, settings, 1)
    delta = strategy.layers["fc1"].weight.detach() - before
    assert float((history.t() @ delta).norm()) > 0.05 * float(delta.norm())


@pytest.mark.parametrize("svd", ["full", "randomized"])
def test_strategy_state_resumes_exactly(small_digits: Path, svd: str) -> None:
    strategy, stream, settings = _setup(small_digits, "mlp:32", proj_rank=4, sketch_rank=8, update_gap=2, svd=svd)
    _train(strategy, stream, settings, 0)
    saved_state = strategy.state_dict()
    saved_model = {k: v.clone() for k, v in strategy.model.state_dict().items()}
    _train(strategy, stream, settings, 1)

    resumed, _, _ = _setup(small_digits, "mlp:32", proj_rank=4, sketch_rank=8, update_gap=2, svd=svd)
    resumed.load_state_dict(saved_state)
    resumed.model.load_state_dict(saved_model)
    _train(resumed, stream, settings, 1)
    for (name, a), (_, b) in zip(strategy.model.state_dict().items(), resumed.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert torch.equal(strategy.history["fc1"], resumed.history["fc1"])
    assert resumed.telemetry() == strategy.telemetry()


def test_vit_loss_is_current_head_over_temperature_and_only_it_trains(small_digits: Path) -> None:
    strategy, stream, settings = _setup(small_digits, "vit:tiny", iterations=3, proj_rank=4, sketch_rank=8)
    backbone = strategy.backbone
    assert sorted(strategy.layers) == ["encoder.blocks.0.attn.proj", "encoder.blocks.1.attn.proj"]
    exp = stream.tasks[1]  # type: ignore[attr-defined]
    strategy.before_task(exp)
    batch = backbone.collate([exp.train[i] for i in range(6)])
    logits = backbone.model.heads[1](backbone.model(backbone.pixels(batch)))
    expected = F.cross_entropy(logits / 3.0, batch["y"] - 2)  # task b holds global classes 2, 3
    torch.testing.assert_close(strategy.loss(batch, exp), expected)
    trainable = {id(p) for p in strategy.trainable_parameters()}
    assert {id(p) for p in backbone.model.heads[1].parameters()} <= trainable
    assert not {id(p) for p in backbone.model.heads[0].parameters()} & trainable
    assert sum(p.numel() for p in strategy.trainable_parameters()) == 2 * 64 * 64 + 64 * 2 + 2
    assert backbone.visible_tasks == 2


def test_presets_follow_the_official_table() -> None:
    cfg = CoSOConfig()
    assert cfg.resolved("imagenet-r-split20").proj_rank == 50 and cfg.resolved("imagenet-r-split20").sketch_rank == 120
    dn = cfg.resolved("domainnet-split5")
    assert (dn.lr, dn.head_lr, dn.proj_rank, dn.sketch_rank, dn.update_gap) == (1e-4, 5e-4, 70, 160, 20)
    c = cfg.resolved("cifar100-split10")
    assert (c.lr, c.head_lr, c.proj_rank, c.sketch_rank) == (3e-4, 5e-4, 15, 100)
    assert cfg.resolved("digits-split").preset == "generic"
    assert CoSOConfig(proj_rank=3).resolved("cifar100-split10").proj_rank == 3
    overrides = CoSOConfig(preset="imagenet-r").train_overrides("vit")
    assert (overrides["epochs"], overrides["batch_size"], overrides["lr"], overrides["scheduler"]) == (40, 128, 4e-4, "cosine")
    assert CoSOConfig().train_overrides("vit")["epochs"] is None
    with pytest.raises(ValueError, match="preset"):
        CoSOConfig(preset="cifar10")


def test_bad_settings_are_one_line_usage_errors(small_digits: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="svd"):
        run(RunOptions(benchmark=str(small_digits), strategy="coso", overrides={"svd": "qr"}, out=tmp_path, progress=False))
    with pytest.raises(UsageError, match="qkv"):
        run(RunOptions(benchmark=str(small_digits), strategy="coso", backbone="vit:tiny", overrides={"targets": "q"}, out=tmp_path, progress=False))


def _check_vit_run(data: dict, n_tasks: int) -> None:
    assert data["status"] == "complete"
    assert data["backbone"]["kind"] == "vit"
    assert len(data["telemetry"]) == n_tasks
    dims = [t["coso_history_dims_total"] for t in data["telemetry"]]
    assert dims == sorted(dims) and dims[-1] > 0
    for row in data["matrix"]["values"][1:]:
        assert all(0.0 <= v <= 1.0 for v in row)
    saved = json.loads((Path(data["_path"])).read_text())
    assert saved["telemetry"][0]["coso_history_dims"].keys() == {"encoder.blocks.0.attn.proj", "encoder.blocks.1.attn.proj"}


def test_runs_end_to_end_class_incremental_with_a_tiny_vit(small_digits: Path, tmp_path: Path) -> None:
    overrides = {"iterations": "20", "lr": "0.01", "head_lr": "0.01", "proj_rank": "4", "sketch_rank": "8"}
    data = run(RunOptions(benchmark=str(small_digits), strategy="coso", backbone="vit:tiny", overrides=overrides, out=tmp_path, progress=False))
    _check_vit_run(data, 3)


@pytest.mark.slow
def test_runs_end_to_end_on_split_digits_with_a_tiny_vit(tmp_path: Path) -> None:
    overrides = {"lr": "0.01", "head_lr": "0.01"}
    data = run(RunOptions(benchmark="digits-split", strategy="coso", backbone="vit:tiny", overrides=overrides, out=tmp_path, progress=False))
    _check_vit_run(data, 5)


def test_run_interrupted_after_a_task_resumes_to_identical_results(small_digits: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    overrides = {"iterations": "8", "proj_rank": "4", "sketch_rank": "8"}
    full = run(RunOptions(benchmark=str(small_digits), strategy="coso", overrides=overrides, out=tmp_path / "full", progress=False))

    original = CoSO.after_task

    def crash_on_second_task(self: CoSO, experience: object) -> None:
        if experience.index == 1:  # type: ignore[attr-defined]
            raise KeyboardInterrupt
        original(self, experience)  # type: ignore[arg-type]

    monkeypatch.setattr(CoSO, "after_task", crash_on_second_task)
    with pytest.raises(KeyboardInterrupt):
        run(RunOptions(benchmark=str(small_digits), strategy="coso", overrides=overrides, out=tmp_path / "cut", progress=False))
    monkeypatch.setattr(CoSO, "after_task", original)
    resumed = run(RunOptions(benchmark=str(small_digits), strategy="coso", overrides=overrides, out=tmp_path / "cut", resume=True, progress=False))
    assert resumed["matrix"]["values"] == full["matrix"]["values"]
    assert resumed["telemetry"] == full["telemetry"]
