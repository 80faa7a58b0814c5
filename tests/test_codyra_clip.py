"""CoDyRA on a tiny random CLIP (saved and reloaded through open_clip's ``pretrained=<file>`` path):
the merge leaves exactly the original CLIP (module types, parameter count, outputs, a checkpoint a
fresh backbone loads), and an MTIL-protocol run (task-incremental, MNIST then EuroSAT in their
torchvision layouts) completes with rank telemetry for both encoders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from clbench.api import RunContext
from clbench.api.benchmark import TrainSettings
from clbench.backbones.clip import build_clip
from clbench.data import build_stream
from clbench.strategies.codyra.layer import CoDyRALinear
from clbench.registry import load_benchmark
from clbench.runner import RunOptions, run
from clbench.strategies.codyra import CoDyRA, CoDyRAConfig
from test_vision_fixtures import save_tiny_clip, write_eurosat, write_mnist_like

MTIL_FIXTURE = """version = 1
description = "MTIL protocol in miniature: two torchvision-layout domains, each scored among its own classes."
protocol = "task-incremental"
backbone = "{spec}"
metrics = ["mtil_transfer", "mtil_avg", "mtil_last", "bwt"]
[train]
iterations = 1000
batch_size = 64
eval_batch_size = 32
[[tasks]]
name = "mnist"
loader = "mnist"
options = {{ classes = [0, 1, 2, 3] }}
[[tasks]]
name = "eurosat"
loader = "eurosat"
"""


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A tiny random CLIP saved as a state dict, reloaded through the real ``clip:<config>@<file>`` spec,
    and an MTIL-protocol benchmark over on-disk MNIST and EuroSAT fixtures."""
    folder = tmp_path_factory.mktemp("codyra-clip")
    config, checkpoint = save_tiny_clip(folder, "tiny-clip-codyra", seed=7)
    spec = f"clip:{config}@{checkpoint}"
    data = folder / "data"
    write_mnist_like(data / "MNIST" / "raw", per_class=3, test_per_class=2)
    write_eurosat(data, per_class=3)
    bench = folder / "mtil-tiny.toml"
    bench.write_text(MTIL_FIXTURE.format(spec=spec), encoding="utf-8")
    return {"spec": spec, "data": data, "bench": bench}


def _strategy(tiny_clip: dict[str, Any]) -> tuple[CoDyRA, Any, Any]:
    spec, loaders = load_benchmark(str(tiny_clip["bench"]))
    stream = build_stream(spec, extra_loaders=loaders, data_root=tiny_clip["data"])
    backbone = build_clip(tiny_clip["spec"])
    backbone.bind(stream)
    ctx = RunContext(stream=stream, train=TrainSettings(), device=torch.device("cpu"), seed=0)
    strategy = CoDyRA(CoDyRAConfig(), ctx)
    strategy.setup(backbone)
    return strategy, backbone, stream


def _encode(model: torch.nn.Module, images: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model.encode_image(images), model.encode_text(text)])


def test_merge_leaves_the_original_clip_and_a_checkpoint_a_fresh_backbone_loads(tiny_clip: dict[str, Any], tmp_path: Path) -> None:
    strategy, backbone, stream = _strategy(tiny_clip)
    model = backbone.model
    fresh = build_clip(tiny_clip["spec"])
    types = [(n, type(m)) for n, m in fresh.model.named_modules()]
    count = sum(p.numel() for p in fresh.model.parameters())
    assert [(n, type(m)) for n, m in model.named_modules()] == types
    strategy.before_task(stream.tasks[0])
    adapters = [m for m in model.modules() if isinstance(m, CoDyRALinear)]
    assert len(adapters) == 24  # q, k, v, o, c_fc, c_proj x 2 blocks x 2 encoders
    assert {p for p in model.parameters() if p.requires_grad} == {p for a in adapters for p in (a.lora_A, a.lora_B, a.gate)}
    with torch.no_grad():
        for i, adapter in enumerate(adapters):  # stand-in for training: nonzero B, some gates at zero
            adapter.lora_B.normal_(std=0.05)
            adapter.gate[: i % 5] = 0.0
    images = torch.randn(3, 3, 32, 32)
    text = backbone.tokenizer(["a photo of a dog", "a satellite photo of a river"])
    model.eval()
    before = _encode(model, images, text)
    assert (before - _encode(fresh.model, images, text)).abs().max() > 1e-3  # the adapters change the outputs
    strategy.after_task(stream.tasks[0])
    assert [(n, type(m)) for n, m in model.named_modules()] == types
    assert sum(p.numel() for p in model.parameters()) == count
    assert (_encode(model, images, text) - before).abs().max() < 1e-5
    ranks = strategy.telemetry()["codyra"]["effective_rank"]
    assert sorted(ranks.values()) == sorted(16 - i % 5 for i in range(24))
    path = tmp_path / "merged.pt"
    torch.save(model.state_dict(), path)
    fresh.model.load_state_dict(torch.load(path, weights_only=True), strict=True)
    fresh.model.eval()
    assert (_encode(fresh.model, images, text) - before).abs().max() < 1e-5


def test_mtil_protocol_run_end_to_end(tiny_clip: dict[str, Any], tmp_path: Path) -> None:
    overrides = {"iterations": "4", "batch_size": "8"}
    results = run(RunOptions(benchmark=str(tiny_clip["bench"]), strategy="codyra", out=tmp_path, seed=0, progress=False,
                             data_root=tiny_clip["data"], overrides=overrides))
    assert results["status"] == "complete"
    assert set(results["metrics"]) >= {"mtil_transfer", "mtil_avg", "mtil_last"}
    train = results["train"]
    assert (train["iterations"], train["batch_size"], train["lr"], tuple(train["betas"]), train["scheduler"]) == (4, 8, 5e-4, (0.9, 0.9999), "cosine")
    assert [t["steps"] for t in results["tasks"]] == [4, 4]
    assert results["backbone"]["parameters"] == build_clip(tiny_clip["spec"]).describe()["parameters"]
    for entry in results["telemetry"]:
        report = entry["codyra"]
        assert len(report["effective_rank"]) == 24 and all(0 <= r <= 16 for r in report["effective_rank"].values())
        grid = report["effective_rank_grid"]
        assert grid["columns"] == [0, 1] and len(grid["rows"]) == 12
        assert "visual.transformer.resblocks.*.attn.q_proj" in grid["rows"] and "transformer.resblocks.*.mlp.c_fc" in grid["rows"]
        assert report["kappa_max"] == 0.005 and report["prox_steps"] == 1  # after step 3 of 0..3 (dense: 2), at κ_max
        assert report["delta_w_fro_total"] > 0
    drift = [e["codyra"]["cumulative_drift_fro"] for e in results["telemetry"]]
    assert drift[0] == pytest.approx(results["telemetry"][0]["codyra"]["delta_w_fro_total"])
