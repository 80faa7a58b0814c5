"""The ``mora`` strategy end to end: per-kind defaults, telemetry, resume, CLI on digits-split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from clbench.api import Backbone, Experience, ExampleListDataset, RunContext, Stream, TrainSettings
from clbench.config import build_config
from clbench.errors import UsageError
from clbench.runner import RunOptions, run
from clbench.strategies.mora import MoRA, MoRAConfig

BENCH = """version = 1
description = "Three tasks of split digits for MoRA tests."
protocol = "class-incremental"
backbone = "mlp:32"
[train]
epochs = 2
batch_size = 32
[[tasks]]
name = "a"
loader = "sklearn-digits"
options = { classes = [0, 1] }
[[tasks]]
name = "b"
loader = "sklearn-digits"
options = { classes = [2, 3] }
[[tasks]]
name = "c"
loader = "sklearn-digits"
options = { classes = [4, 5] }
"""
RANK = 4


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bench") / "digits-mora.toml"
    path.write_text(BENCH, encoding="utf-8")
    return path


def _run(bench: Path, out: Path, **kw) -> dict:
    return run(RunOptions(benchmark=str(bench), strategy="mora", out=out, seed=3, progress=False, overrides={"rank": str(RANK)}, **kw))


@pytest.fixture(scope="module")
def reference(bench: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    return _run(bench, tmp_path_factory.mktemp("reference"))


def test_defaults_follow_the_papers_runners_per_backbone_kind() -> None:
    config = MoRAConfig()
    clip = config.layer_settings("clip")
    assert (clip.rank, clip.topk, clip.temperature, clip.threshold, clip.scaling, clip.dropout) == (16, 16, 0.01, 0.2, 1.0, 0.0)
    from clbench.backbones.clip import CLIPBackbone
    from clbench.backbones.hf_causal import CausalLMBackbone
    from clbench.strategies.mora import MoRA

    assert CLIPBackbone.adapter_placements[MoRA.adapter_placement_by_kind.get("clip", MoRA.adapter_placement)] == ("q", "k", "v", "o", "fc", "proj")
    assert CausalLMBackbone.adapter_placements[MoRA.adapter_placement_by_kind["llm"]] == ("q", "k", "v", "o")
    train = config.train_overrides("clip")
    assert {k: train[k] for k in ("optimizer", "lr", "betas", "scheduler", "iterations", "batch_size", "weight_decay")} == {
        "optimizer": "adamw", "lr": 5e-4, "betas": (0.9, 0.9999), "scheduler": "cosine", "iterations": 500, "batch_size": 64, "weight_decay": 0.0}
    llm = config.layer_settings("llm")
    assert (llm.rank, llm.alpha, llm.scaling, llm.dropout, llm.topk, llm.temperature, llm.threshold, llm.norm_eps) == (8, 16.0, 2.0, 0.1, 8, 0.03, 0.2, 1e-8)
    assert llm.bake_scaling_on_freeze  # ours: the fix of the LLM code's freeze
    assert config.train_overrides("llm")["lr"] == 5e-4 and config.train_overrides("llm")["iterations"] is None


def test_overrides_win_and_are_checked() -> None:
    config = build_config(MoRAConfig, {"rank": "4", "temperature": "0.1", "lr": "0.01", "targets": "q,v", "bake_scaling_on_freeze": "false"}, owner="mora")
    clip = config.layer_settings("clip")
    assert (clip.rank, clip.topk, clip.temperature, clip.alpha) == (4, 4, 0.1, 4.0)  # topk follows an overridden rank
    assert config.train_overrides("clip")["lr"] == 0.01 and config.targets == ("q", "v")
    assert config.layer_settings("llm").scaling == 2.0 and not config.layer_settings("llm").bake_scaling_on_freeze
    with pytest.raises(UsageError, match="temperature"):
        build_config(MoRAConfig, {"temperature": "0"}, owner="strategy 'mora'")
    with pytest.raises(UsageError, match="no setting"):
        build_config(MoRAConfig, {"tau": "0.1"}, owner="strategy 'mora'")


class _OneLayer(Backbone):
    """A bare backbone: one 8 -> 3 linear layer, adaptable as ``fc``."""

    kind = "classic"
    target_patterns = {"fc": ("0",)}

    def loss(self, batch):  # noqa: ANN001, ANN201 - not trained here
        raise NotImplementedError

    def score(self, batch, experience):  # noqa: ANN001, ANN201
        raise NotImplementedError


def test_routing_matrix_counts_activations_per_owning_task() -> None:
    """Two tasks whose inputs live in orthogonal subspaces, each owning the atoms keyed on its own
    subspace: every activation lands on the owner's atoms, so the routing matrix is the identity."""
    torch.manual_seed(0)
    backbone = _OneLayer("one-layer", torch.nn.Sequential(torch.nn.Linear(8, 3)))
    empty = ExampleListDataset([])
    tasks = [Experience(index=i, name=name, train=empty, test=empty) for i, name in enumerate(("low", "high"))]
    ctx = RunContext(stream=Stream(protocol="task-incremental", experiences=tuple(tasks)), train=TrainSettings(), device=torch.device("cpu"), seed=0)
    strategy = MoRA(MoRAConfig(rank=4, topk=4, threshold=0.15, train_head=False), ctx)
    strategy.setup(backbone)
    layer = strategy.layers["0"]
    eye = torch.eye(8)
    for task, keys in zip(tasks, (eye[:4], eye[4:]), strict=True):
        strategy.before_task(task)
        with torch.no_grad():
            layer.lora_A.copy_(keys)
            layer.lora_B.normal_()
    inputs = {"low": torch.rand(10, 8) * torch.tensor([1.0] * 4 + [0.0] * 4) + 0.5 * torch.tensor([1.0] * 4 + [0.0] * 4),
              "high": torch.rand(6, 8) * torch.tensor([0.0] * 4 + [1.0] * 4) + 0.5 * torch.tensor([0.0] * 4 + [1.0] * 4)}
    backbone.model.eval()
    with torch.no_grad():
        for task in tasks:
            strategy.eval_task_start(task)
            backbone.model(inputs[task.name])
            strategy.eval_task_end(task)
    mora = strategy.telemetry()["mora"]
    assert mora["routing_rows"] == ["low", "high"] and mora["routing_columns"] == ["low", "high"]
    assert mora["routing_matrix"] == [[1.0, 0.0], [0.0, 1.0]]
    assert mora["routing_tokens"] == [10, 6]
    # inputs in [0.5, 1.5]^4: every own-subspace score is >= 0.5 / sqrt(0.5² + 3 · 1.5²) ≈ 0.19 > δ = 0.15,
    # so the owner's 4 atoms all stay active; the other task's scores are 0 < δ
    assert mora["active_experts_per_token_by_task"] == [4.0, 4.0] and mora["active_experts_per_token"] == 4.0
    assert (mora["bank_atoms_per_module"], mora["frozen_atoms_per_module"], mora["bank_parameters"]) == (8, 4, 8 * (8 + 3))


def test_training_telemetry_counts_tokens_routed_to_the_fresh_atoms(caplog: pytest.LogCaptureFixture) -> None:
    """Task 1 owns every atom (share 1). Task 2's fresh keys are zero (score 0) while the bank's
    keys match the inputs (scores > 0), so top-4 of 8 never picks a fresh atom: share 0 and a
    warning. With fresh keys on the inputs' subspace and the bank's orthogonal to it, share 1."""
    torch.manual_seed(0)
    backbone = _OneLayer("one-layer", torch.nn.Sequential(torch.nn.Linear(8, 3)))
    empty = ExampleListDataset([])
    tasks = [Experience(index=i, name=name, train=empty, test=empty) for i, name in enumerate(("a", "b", "c"))]
    ctx = RunContext(stream=Stream(protocol="task-incremental", experiences=tuple(tasks)), train=TrainSettings(), device=torch.device("cpu"), seed=0)
    strategy = MoRA(MoRAConfig(rank=4, topk=4, train_head=False), ctx)
    strategy.setup(backbone)
    layer = strategy.layers["0"]
    eye, low = torch.eye(8), torch.tensor([1.0] * 4 + [0.0] * 4)
    backbone.model.train()
    strategy.before_task(tasks[0])
    with torch.no_grad():
        layer.lora_A.copy_(eye[:4])
    backbone.model(torch.rand(5, 8) + 0.5)
    strategy.after_task(tasks[0])
    assert strategy.telemetry()["mora"]["train_fresh_routing_share"] == 1.0
    strategy.before_task(tasks[1])
    with torch.no_grad():
        layer.lora_A.zero_()
    with caplog.at_level("WARNING", logger="clbench"):
        backbone.model((torch.rand(3, 2, 8) + 0.5) * low)  # 6 tokens, all in the bank's subspace
        strategy.after_task(tasks[1])
    assert strategy.telemetry()["mora"]["train_fresh_routing_share"] == 0.0
    assert "task 2 (b) cannot learn: no training token routes to its atoms" in caplog.text
    strategy.before_task(tasks[2])
    with torch.no_grad():
        layer.lora_A.copy_(eye[4:])
    backbone.model((torch.rand(4, 8) + 0.5) * (1 - low))  # scores: bank 0, fresh > 0
    strategy.after_task(tasks[2])
    mora = strategy.telemetry()["mora"]
    assert mora["train_fresh_routing_share"] == 1.0 and mora["train_fresh_routing_share_by_task"] == {"a": 1.0, "b": 0.0, "c": 1.0}
    assert "task 3" not in caplog.text
    assert strategy.state_dict()["train_routing"] == {"a": 1.0, "b": 0.0, "c": 1.0}


def test_banks_grow_per_task_and_telemetry_describes_routing(reference: dict) -> None:
    assert reference["status"] == "complete" and reference["strategy"]["name"] == "mora"
    per_task = [entry["mora"] for entry in reference["telemetry"]]
    assert [t["bank_atoms_per_module"] for t in per_task] == [RANK, 2 * RANK, 3 * RANK]
    assert [t["frozen_atoms_per_module"] for t in per_task] == [0, RANK, 2 * RANK]
    growth = [b["bank_parameters"] - a["bank_parameters"] for a, b in zip(per_task, per_task[1:])]
    assert growth == [RANK * (64 + 32)] * 2  # one adapted module (fc1: 64 -> 32)
    for t, entry in enumerate(per_task):
        assert entry["routing_rows"] == ["a", "b", "c"]
        assert entry["routing_columns"] == ["a", "b", "c"][: t + 1]
        matrix = entry["routing_matrix"]
        assert len(matrix) == 3 and all(len(row) == t + 1 for row in matrix)
        assert all(sum(row) == pytest.approx(1, abs=1e-5) or sum(row) == 0 for row in matrix)
        assert all(0 <= a <= RANK for a in entry["active_experts_per_token_by_task"])
        assert entry["routing_tokens"] == per_task[0]["routing_tokens"] and min(entry["routing_tokens"]) > 0  # same test sets
    # δ prunes in evaluation: fewer than the full budget of atoms stay active per token
    assert per_task[-1]["active_experts_per_token"] < RANK
    # only the adapter atoms and the classifier head train
    assert reference["backbone"]["trainable_parameters"] == RANK * (64 + 32) + (32 * 6 + 6)
    assert reference["train"]["scheduler"] == "cosine" and reference["train"]["lr"] == 5e-3


def test_report_draws_the_routing_matrix(reference: dict, tmp_path: Path) -> None:
    from clbench.report import build_report

    written = build_report([Path(reference["_path"]).parent], tmp_path / "report")
    names = {p.name for p in written} | {p.name for p in (tmp_path / "report").rglob("*")}
    assert any("routing-matrix" in n and n.endswith(".png") for n in names), sorted(names)
    assert any("active-experts-per-token" in n or n.startswith("telemetry-mora") for n in names)


def test_resumed_run_reproduces_the_uninterrupted_one(bench: Path, reference: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Crash(RuntimeError):
        pass

    original = MoRA.after_task

    def crash_on_second_task(self: MoRA, experience) -> None:  # noqa: ANN001
        if experience.index == 1:
            raise Crash("killed during task b")
        original(self, experience)

    monkeypatch.setattr(MoRA, "after_task", crash_on_second_task)
    with pytest.raises(Crash):
        _run(bench, tmp_path)
    monkeypatch.setattr(MoRA, "after_task", original)
    run_dir = tmp_path / "digits-mora" / "mora" / f"seed-3-S-rank={RANK}"
    assert json.loads((run_dir / "checkpoint" / "checkpoint.json").read_text())["tasks_done"] == 1
    resumed = _run(bench, tmp_path, resume=True)
    assert "resumed" in (run_dir / "run.log").read_text()
    assert resumed["matrix"]["values"] == reference["matrix"]["values"]
    assert resumed["metrics"] == reference["metrics"]
    assert resumed["telemetry"] == reference["telemetry"]


def test_cli_runs_mora_on_digits_split(cli, tmp_path: Path) -> None:  # noqa: ANN001
    status, out, err = cli("run", "digits-split", "-s", "mora", "-S", "epochs=1", "-S", "batch_size=64", "--out", tmp_path, "--no-progress")
    assert status == 0, err
    results = json.loads((tmp_path / "digits-split" / "mora" / "seed-0-S-batch_size=64,epochs=1" / "results.json").read_text())
    assert results["status"] == "complete" and len(results["telemetry"]) == 5
    assert results["telemetry"][-1]["mora"]["routing_columns"] == results["benchmark"]["tasks"]
    status, _, err = cli("run", "digits-split", "-s", "mora", "-S", "topk=0", "--out", tmp_path / "bad", "--no-progress")
    assert status == 2 and "topk" in err and "Traceback" not in err


# ---- CLIP on the MTIL protocol ------------------------------------------------------------
MTIL_TINY = """version = 1
description = "MTIL protocol (task-incremental, per-task CLIP heads) on two tiny on-disk domains."
protocol = "task-incremental"
backbone = "{spec}"
metrics = ["mtil_transfer", "mtil_avg", "mtil_last", "bwt"]
[train]
iterations = 3
batch_size = 8
eval_batch_size = 64
[[tasks]]
name = "mnist"
loader = "mnist"
options = {{ classes = [0, 1], k_shot = 4 }}
[[tasks]]
name = "eurosat"
loader = "eurosat"
options = {{ classes = [0, 1], k_shot = 4 }}
"""


def test_mora_on_the_mtil_protocol_with_a_tiny_clip(tmp_path: Path) -> None:
    """Both encoders' q/k/v/o/fc/proj wrapped, banks grow, routing telemetry over image and text tokens."""
    from test_vision_fixtures import save_tiny_clip, write_eurosat, write_mnist_like

    config, checkpoint = save_tiny_clip(tmp_path / "model", "tiny-clip-mora")
    root = tmp_path / "data"
    write_mnist_like(root / "MNIST" / "raw", per_class=4, test_per_class=2)
    write_eurosat(root, per_class=5)
    bench = tmp_path / "mtil-tiny.toml"
    bench.write_text(MTIL_TINY.format(spec=f"clip:{config}@{checkpoint}"), encoding="utf-8")
    results = run(RunOptions(benchmark=str(bench), strategy="mora", out=tmp_path / "runs", data_root=root, progress=False,
                             overrides={"iterations": "2", "batch_size": "8", "rank": "2"}))
    assert results["status"] == "complete" and results["train"]["iterations"] == 2 and tuple(results["train"]["betas"]) == (0.9, 0.9999)
    first, last = (entry["mora"] for entry in (results["telemetry"][0], results["telemetry"][-1]))
    # 2 blocks x 2 encoders per target, width 32, MLP width 128, r = 2 atoms per task
    per_task = {"q": 4 * 2 * 64, "k": 4 * 2 * 64, "v": 4 * 2 * 64, "o": 4 * 2 * 64, "fc": 4 * 2 * 160, "proj": 4 * 2 * 160}
    assert first["bank_parameters_by_target"] == per_task
    assert last["bank_parameters_by_target"] == {k: 2 * v for k, v in per_task.items()}
    assert (first["bank_atoms_per_module"], last["bank_atoms_per_module"]) == (2, 4)
    assert last["routing_columns"] == ["mnist", "eurosat"] and len(last["routing_matrix"]) == 2
    assert all(sum(row) == pytest.approx(1, abs=1e-5) or sum(row) == 0 for row in last["routing_matrix"])
    assert min(last["routing_tokens"]) > 0
    matrix = results["matrix"]["values"]
    assert len(matrix) == 3 and all(0 <= v <= 1 for row in matrix for v in row)
    assert set(results["metrics"]) >= {"mtil_transfer", "mtil_avg", "mtil_last"}


# ---- LLM: the quickstart ----------------------------------------------------------------------
@pytest.mark.slow
def test_mora_on_the_quickstart(tmp_path: Path) -> None:
    """SmolLM2-135M (offline GGUF wheel) on the quickstart: q/k/v/o banks grow, probe rows routed too."""
    results = run(RunOptions(benchmark="quickstart", strategy="mora", out=tmp_path, progress=False))
    assert results["status"] == "complete"
    entries = [entry["mora"] for entry in results["telemetry"]]
    tasks = results["benchmark"]["tasks"]
    assert [e["bank_atoms_per_module"] for e in entries] == [8 * (t + 1) for t in range(len(tasks))]
    assert set(entries[0]["bank_parameters_by_target"]) == {"q", "k", "v", "o"}
    assert entries[-1]["routing_columns"] == tasks
    assert entries[-1]["routing_rows"] == [*tasks, *results["benchmark"]["probes"]]
    assert 0 < entries[-1]["active_experts_per_token"] <= 8
    assert results["train"]["lr"] == 5e-4 and results["train"]["scheduler"] == "cosine"
