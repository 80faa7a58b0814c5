"""The vit backbone: tiny ViTs sized from the data, per-task heads and their visibility, protocol
masks, image and tensor examples, adapter targets, and checkpoints loaded through timm's real
pretrained-file path (a random vit_tiny saved to disk), with one-line errors for missing assets."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from clbench import registry
from clbench.api import ExampleListDataset, Experience, Stream
from clbench.backbones.vit import ViTBackbone, build_vit
from clbench.data import build_stream
from clbench.errors import MissingAssetError, UsageError


def _digits_backbone(bench: Path, spec: str = "vit:tiny") -> tuple[ViTBackbone, Stream]:
    benchmark, _ = registry.load_benchmark(str(bench))
    stream = build_stream(benchmark)
    torch.manual_seed(0)
    backbone = registry.build_backbone(spec)
    backbone.bind(stream)
    return backbone, stream


def _image_stream(protocol: str = "class-incremental") -> Stream:
    gen = torch.Generator().manual_seed(0)

    def examples(task: int, labels: list[int], n: int) -> ExampleListDataset:
        items = []
        for i in range(n):
            pixels = (torch.rand(40, 48, 3, generator=gen) * 255).to(torch.uint8).numpy()
            items.append({"image": Image.fromarray(pixels), "y": labels[i % len(labels)], "task_id": task})
        return ExampleListDataset(items)

    if protocol == "domain-incremental":
        ids = [(0, 1, 2), (0, 1, 2)]
    else:
        ids = [(0, 1, 2), (3, 4)]
    exps = tuple(Experience(index=t, name=f"t{t}", train=examples(t, list(c), 4), test=examples(t, list(c), 4), class_ids=c) for t, c in enumerate(ids))
    return Stream(protocol=protocol, experiences=exps, class_names=tuple(f"c{i}" for i in range(5 if protocol != "domain-incremental" else 3)))


def test_tiny_vit_on_digits_has_per_task_heads_and_named_targets(small_digits: Path) -> None:
    backbone, stream = _digits_backbone(small_digits)
    assert backbone.kind == "vit"
    assert backbone.input_shape == (1, 8, 8)
    assert [h.out_features for h in backbone.model.heads] == [2, 2, 2]
    assert list(backbone.adapter_targets(["o"])) == ["encoder.blocks.0.attn.proj", "encoder.blocks.1.attn.proj"]
    assert list(backbone.adapter_targets(["qkv"])) == ["encoder.blocks.0.attn.qkv", "encoder.blocks.1.attn.qkv"]
    assert len(backbone.adapter_targets(["fc", "proj", "head"])) == 7
    with pytest.raises(UsageError, match="qkv"):
        backbone.adapter_targets(["q", "v"])
    batch = backbone.collate([stream.tasks[0].train[i] for i in range(5)])
    assert backbone.pixels(batch).shape == (5, 1, 8, 8)


def test_logits_place_each_visible_head_at_its_classes(small_digits: Path) -> None:
    backbone, stream = _digits_backbone(small_digits)
    backbone.model.eval()
    batch = backbone.collate([stream.tasks[1].test[i] for i in range(4)])
    features = backbone.model(backbone.pixels(batch))
    logits = backbone.outputs(batch)
    for t, ids in enumerate(([0, 1], [2, 3], [4, 5])):
        torch.testing.assert_close(logits[:, ids], backbone.model.heads[t](features))
    backbone.set_visible_tasks(2)  # CoSO's rule: heads of the tasks seen so far
    logits = backbone.outputs(batch)
    assert torch.isinf(logits[:, 4:]).all() and torch.isfinite(logits[:, :4]).all()
    torch.testing.assert_close(backbone.head_logits(batch, 1), backbone.model.heads[1](features))
    assert backbone.local_labels(torch.tensor([0, 2, 3, 5]), 1).tolist() == [-1, 0, 1, -1]
    assert float(backbone.loss(batch).detach()) > 0


def test_task_incremental_scores_each_example_against_its_own_head(tmp_path: Path) -> None:
    bench = tmp_path / "til.toml"
    bench.write_text(Path(registry.load_benchmark("digits-split-task-il")[0].source).read_text(encoding="utf-8"), encoding="utf-8")
    backbone, stream = _digits_backbone(bench)
    items = [stream.tasks[2].test[0], stream.tasks[4].test[0]]
    logits = backbone.outputs(backbone.collate(items))
    finite = torch.isfinite(logits)
    assert finite[0].nonzero().flatten().tolist() == [4, 5]
    assert finite[1].nonzero().flatten().tolist() == [8, 9]


def test_image_examples_are_augmented_in_training_and_centre_cropped_in_eval() -> None:
    from torchvision.transforms import functional as TF

    backbone = build_vit("vit:tiny")
    stream = _image_stream()
    backbone.bind(stream)
    assert backbone.input_shape == (3, 32, 32)
    items = [stream.tasks[0].train[i] for i in range(3)]
    backbone.model.eval()
    batch = backbone.collate(items)
    expected = TF.to_tensor(TF.center_crop(TF.resize(items[0]["image"], 36), 32))
    torch.testing.assert_close(batch["x"][0], expected)
    assert batch["y"].tolist() == [0, 1, 2] and batch["task_id"].tolist() == [0, 0, 0]
    backbone.model.train()
    torch.manual_seed(1)
    first = backbone.collate(items)["x"]
    torch.manual_seed(2)
    second = backbone.collate(items)["x"]
    assert first.shape == (3, 3, 32, 32) and not torch.equal(first, second)
    assert backbone.outputs({"x": first, "task_id": batch["task_id"]}).shape == (3, 5)


def test_domain_incremental_streams_share_one_head() -> None:
    backbone = build_vit("vit:tiny")
    backbone.bind(_image_stream("domain-incremental"))
    assert len(backbone.model.heads) == 1 and backbone.model.heads[0].out_features == 3
    assert backbone.head_parameters(1) == backbone.head_parameters(0)


def test_checkpoint_file_loads_through_timm_and_keeps_every_weight(tmp_path: Path) -> None:
    import timm
    from safetensors.torch import save_file

    reference = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10)
    path = tmp_path / "vit_tiny.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    backbone = build_vit(f"vit:vit_tiny_patch16_224@{path}?norm=model")
    loaded = backbone.model.encoder.state_dict()
    expected = reference.state_dict()
    assert loaded.keys() == {k for k in expected if not k.startswith("head.")}
    assert all(torch.equal(loaded[k], expected[k]) for k in loaded)
    assert backbone.image_size == 224 and backbone.mean == (0.5, 0.5, 0.5)


def test_missing_assets_and_bad_specs_fail_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLBENCH_ALLOW_DOWNLOAD", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(MissingAssetError, match="CLBENCH_ALLOW_DOWNLOAD=1"):
        build_vit("vit:vit_base_patch16_224.augreg_in21k")
    with pytest.raises(MissingAssetError, match="does not exist"):
        build_vit(f"vit:vit_tiny_patch16_224@{tmp_path / 'nope.safetensors'}")
    with pytest.raises(UsageError, match="unknown timm model"):
        build_vit("vit:vit_no_such_model")
    with pytest.raises(UsageError, match="norm"):
        build_vit("vit:tiny?norm=imagenet")
    with pytest.raises(UsageError, match="checkpoint"):
        build_vit("vit:tiny@x.pt")


def test_lora_adapts_qkv_and_trains_the_heads_on_the_vit_kind(small_digits: Path) -> None:
    from clbench.api import RunContext
    from clbench.strategies.lora import SequentialLoRA

    backbone, stream = _digits_backbone(small_digits)
    ctx = RunContext(stream=stream, train=registry.load_benchmark(str(small_digits))[0].train, device=torch.device("cpu"), seed=0)
    strategy = SequentialLoRA(SequentialLoRA.Config(), ctx)
    strategy.setup(backbone)
    assert sorted(strategy.adapters) == ["encoder.blocks.0.attn.qkv", "encoder.blocks.1.attn.qkv"]
    trainable = {n for n, p in backbone.model.named_parameters() if p.requires_grad}
    assert {f"heads.{t}.weight" for t in range(3)} <= trainable
    assert not any(n.startswith("encoder.") and "lora_" not in n for n in trainable)
