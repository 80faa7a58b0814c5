"""CoSO beyond the ViT: the same optimizer on a tiny CLIP's attention output projections (MTIL
protocol, fixture data), and the vit backbone on image files through a real image loader."""

from __future__ import annotations

from pathlib import Path

import pytest

from clbench.runner import RunOptions, run
from test_vision_fixtures import save_tiny_clip, write_mnist_like

BENCHMARK = """version = 1
description = "Two fixture MNIST tasks."
protocol = "{protocol}"
backbone = "{backbone}"
[train]
iterations = 4
batch_size = 8
eval_batch_size = 64
lr = 0.01
[defaults]
k_shot = 4
[[tasks]]
name = "low"
loader = "mnist"
options = {{ classes = [0, 1, 2] }}
[[tasks]]
name = "high"
loader = "mnist"
options = {{ classes = [3, 4, 5] }}
"""


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("coso-clip")
    config, checkpoint = save_tiny_clip(base)
    data = base / "data"
    write_mnist_like(data / "MNIST" / "raw", per_class=4, test_per_class=3)
    clip = base / "clip-tiny.toml"
    clip.write_text(BENCHMARK.format(protocol="task-incremental", backbone=f"clip:{config}@{checkpoint}"), encoding="utf-8")
    vit = base / "vit-tiny.toml"
    vit.write_text(BENCHMARK.format(protocol="class-incremental", backbone="vit:tiny"), encoding="utf-8")
    return {"base": base, "data": data, "clip": clip, "vit": vit}


def test_coso_trains_clip_attention_outputs_and_grows_their_history(assets: dict[str, Path]) -> None:
    from clbench import registry

    data = run(RunOptions(benchmark=str(assets["clip"]), strategy="coso", overrides={"targets": "o", "proj_rank": "2", "sketch_rank": "4"},
                          out=assets["base"] / "runs", data_root=assets["data"], device="cpu", progress=False))
    assert data["status"] == "complete" and data["backbone"]["kind"] == "clip"
    expected = registry.build_backbone(data["backbone"]["spec"]).adapter_targets(["o"])
    assert len(expected) == 4  # text and vision towers, two blocks each
    first, last = data["telemetry"]
    assert set(last["coso_history_dims"]) == set(expected)
    # only the adapted weights train (no biases, no heads: CLIP's heads are zero-shot text)
    assert data["backbone"]["trainable_parameters"] == sum(layer.weight.numel() for layer in expected.values())
    for name in expected:
        assert last["coso_history_dims"][name] == first["coso_history_dims"][name] + last["coso_appended_dims"][name]
    assert sum(last["coso_history_dims"].values()) > sum(first["coso_history_dims"].values()) > 0


def test_vit_backbone_trains_on_image_files_from_a_loader(assets: dict[str, Path]) -> None:
    data = run(RunOptions(benchmark=str(assets["vit"]), strategy="coso", overrides={"proj_rank": "2", "sketch_rank": "4"},
                          out=assets["base"] / "runs", data_root=assets["data"], device="cpu", progress=False))
    assert data["status"] == "complete" and data["backbone"]["kind"] == "vit"
    assert data["tasks"][0]["steps"] == 4 and data["tasks"][0]["examples"] == 12
    assert len(data["matrix"]["values"]) == 3
