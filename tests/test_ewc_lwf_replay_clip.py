"""ewc, lwf and replay on CLIP: a tiny open_clip model saved and reloaded through
``pretrained=<file>`` on fixture MNIST/EuroSAT data. LwF distills image-text logits against the
previous task's class texts; all three run end to end under the MTIL (task-incremental) protocol."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from clbench.api import RunContext, TrainSettings
from clbench.api.benchmark import load_benchmark_file
from clbench.data import build_stream
from clbench.registry import build_backbone
from clbench.runner import RunOptions, run
from clbench.strategies.lwf import LwF, LwFConfig, distillation_kl
from test_vision_fixtures import save_tiny_clip, write_eurosat, write_mnist_like


BENCHMARK = """version = 1
description = "Two MTIL-style domains on fixture data."
protocol = "{protocol}"
backbone = "{backbone}"
[train]
iterations = 2
batch_size = 6
eval_batch_size = 64
lr = 0.0001
[defaults]
k_shot = 3
[[tasks]]
name = "mnist"
loader = "mnist"
options = {{ classes = [0, 1, 2, 3] }}
[[tasks]]
name = "eurosat"
loader = "eurosat"
"""


@pytest.fixture(scope="module")


def clip_setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("clip-baselines")
    config, checkpoint = save_tiny_clip(base)
    data = base / "data"
    write_mnist_like(data / "MNIST" / "raw", per_class=4, test_per_class=2)
    write_eurosat(data, per_class=4)
    benches = {}
    for protocol in ("task-incremental", "class-incremental"):
        bench = base / f"clip-{protocol}.toml"
        bench.write_text(BENCHMARK.format(protocol=protocol, backbone=f"clip:{config}@{checkpoint}"), encoding="utf-8")
        benches[protocol] = bench
    return {"data": data, **benches}


@pytest.mark.parametrize("protocol", ["class-incremental", "task-incremental"])


def test_lwf_distills_logits_against_the_previous_class_texts(clip_setup: dict[str, Path], protocol: str) -> None:
    spec = load_benchmark_file(clip_setup[protocol])
    stream = build_stream(spec, data_root=clip_setup["data"])
    backbone = build_backbone(spec.backbone)
    backbone.bind(stream)
    strategy = LwF(LwFConfig(), RunContext(stream=stream, train=TrainSettings(), device=torch.device("cpu"), seed=0))
    strategy.setup(backbone)
    task = stream.tasks[1]
    strategy.before_task(task)
    backbone.model.eval()  # deterministic preprocessing for the comparison
    batch = backbone.collate([task.train[i] for i in range(4)])
    assert float(strategy.distillation(batch).detach()) == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        proj = backbone.model.text_projection
        proj.add_(0.5 * torch.randn_like(proj))
        as_old = {**batch, "task_id": torch.zeros_like(batch["task_id"]), "tasks": (0,)}
        old = strategy.teacher.outputs(as_old)
        new = backbone.outputs(as_old)
    assert old.shape == (4, 4)  # the 4 MNIST class texts of the previous task
    expected = distillation_kl(old, new, 2.0)
    assert float(expected) > 0
    assert float(strategy.distillation(batch).detach()) == pytest.approx(float(expected), rel=1e-4)


@pytest.mark.slow  # end-to-end training runs; the mechanism tests above run by default
@pytest.mark.parametrize(("strategy", "overrides"), [("ewc", {"fisher_samples": "4"}), ("lwf", {}), ("replay", {"buffer_size": "5"})])


def test_runs_end_to_end_on_clip(strategy: str, overrides: dict[str, str], clip_setup: dict[str, Path], tmp_path: Path) -> None:
    result = run(RunOptions(benchmark=str(clip_setup["task-incremental"]), strategy=strategy, out=tmp_path, progress=False,
                            overrides=overrides, data_root=clip_setup["data"], device="cpu"))
    assert result["status"] == "complete" and result["backbone"]["spec"].startswith("clip:")
    assert all(0.0 <= v <= 1.0 for row in result["matrix"]["values"] for v in row)
    assert result["tasks"][1]["steps"] == 2
    last = result["telemetry"][-1]
    if strategy == "ewc":
        assert last["fisher_mass"] > 0
    elif strategy == "lwf":
        assert last["lwf_distill_kl"] is not None
    else:
        assert last["buffer_size"] == 5
