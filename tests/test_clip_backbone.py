"""The CLIP backbone: spec resolution (checkpoint files, tags, errors), adapter targets, zero-shot
heads for MTIL (per task) and X-TAIL (union, offset ids) with the real class-name lists, scoring,
and the §1.3 training loss against a loop-by-loop reference."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from torch.nn import functional as F
from torch.utils.data import Dataset

from clbench.api.benchmark import BenchmarkSpec, TaskSpec
from clbench.api.stream import ExampleListDataset
from clbench.backbones import clip_loading
from clbench.backbones.clip import CLIPBackbone, build_clip
from clbench.data import LoaderContext, TaskData, build_stream
from clbench.data.classnames import curated_classnames, prompt_templates, readable_classnames
from clbench.errors import MissingAssetError, UsageError
from test_vision_fixtures import write_tiny_clip_config

# Datasets whose class names clip_benchmark ships without needing the data.
REAL_LISTS = ("caltech101", "eurosat", "flowers102", "mnist", "oxford-pets")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A tiny random CLIP saved as a plain state dict, and the spec that reloads it."""
    import open_clip

    folder = tmp_path_factory.mktemp("tiny-clip")
    config = write_tiny_clip_config(folder)
    open_clip.add_model_config(config)
    torch.manual_seed(123)
    model = open_clip.create_model("tiny-clip-test").eval()
    checkpoint = folder / "tiny.pt"
    torch.save(model.state_dict(), checkpoint)
    return {"config": config, "checkpoint": checkpoint, "model": model, "spec": f"clip:{config}@{checkpoint}"}


@pytest.fixture(scope="module")
def backbone(tiny: dict[str, Any]) -> CLIPBackbone:
    return build_clip(tiny["spec"])


def _names(dataset: str) -> tuple[str, ...]:
    names = curated_classnames(dataset)
    assert names is not None
    return names[1:] if dataset == "caltech101" else names  # torchvision drops Caltech's background class


def _stream(protocol: str, datasets: tuple[str, ...]) -> Any:
    """A stream over the real class-name lists (no images needed: datasets are empty)."""
    def loader(options: dict[str, Any], ctx: LoaderContext) -> TaskData:
        empty: Dataset[Any] = ExampleListDataset([])
        return TaskData(train=empty, test=empty, class_names=_names(options["dataset"]), templates=prompt_templates(options["dataset"]))

    spec = BenchmarkSpec(name="heads", version=1, description="", protocol=protocol, backbone="clip:x",
                         tasks=tuple(TaskSpec(name=d, loader="real-names", options={"dataset": d}) for d in datasets))
    return build_stream(spec, extra_loaders={"real-names": loader})


# ---- loading ----------------------------------------------------------------------------
def test_checkpoint_file_round_trips_through_open_clip_pretrained_path(tiny: dict[str, Any], backbone: CLIPBackbone) -> None:
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = tiny["model"].encode_image(images)
        assert torch.allclose(backbone.model.encode_image(images), expected, atol=1e-5)
        random_init = build_clip(f"clip:{tiny['config']}")  # no @: random weights, so the load above mattered
        assert not torch.allclose(random_init.model.encode_image(images), expected, atol=1e-3)
    assert backbone.describe()["weights"] == str(tiny["checkpoint"])


def test_spec_errors_are_one_line(tiny: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(MissingAssetError, match="not found"):
        build_clip(f"clip:{tiny['config']}@/nonexistent/ckpt.pt")
    with pytest.raises(UsageError, match="unknown CLIP architecture"):
        build_clip("clip:ViT-B-161@openai")
    with pytest.raises(UsageError, match="unknown pretrained tag"):
        build_clip("clip:ViT-B-16@not-a-tag")
    with pytest.raises(UsageError, match="expected clip:"):
        build_clip("clip:")
    monkeypatch.setattr(clip_loading, "_cached_pretrained_file", lambda cfg: None)
    monkeypatch.delenv(clip_loading.ALLOW_DOWNLOAD_ENV, raising=False)
    with pytest.raises(MissingAssetError) as info:
        build_clip("clip:ViT-B-16@openai")
    message = str(info.value)
    assert "ViT-B-16@openai" in message and "CLBENCH_ALLOW_DOWNLOAD=1" in message and "\n" not in message


def test_cached_tag_is_loaded_from_the_cache_with_the_tag_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cached = tmp_path / "open_clip_model.safetensors"
    monkeypatch.setattr(clip_loading, "_cached_pretrained_file", lambda cfg: str(cached))
    weights = clip_loading.resolve_weights(clip_loading.parse_spec("clip:ViT-B-16@openai"), "clip:ViT-B-16@openai")
    assert weights.pretrained == str(cached)
    assert weights.options["force_quick_gelu"] is True  # OpenAI weights were trained with QuickGELU
    assert weights.options["image_mean"] == pytest.approx((0.48145466, 0.4578275, 0.40821073))


def test_adapter_targets_select_encoders(backbone: CLIPBackbone) -> None:
    assert len(backbone.adapter_targets(["q"])) == 4  # 2 blocks x 2 encoders
    vision = backbone.adapter_targets(["vision.q", "vision.o"])
    assert len(vision) == 4 and all(n.startswith("visual.") for n in vision)
    text = backbone.adapter_targets(["text.all"])
    assert len(text) == 12 and not any(n.startswith("visual.") for n in text)
    both = backbone.adapter_targets(["q", "k", "v", "o", "fc", "proj"])
    assert len(both) == 24 and {n.rsplit(".", 1)[-1] for n in both} == {"q_proj", "k_proj", "v_proj", "out_proj", "c_fc", "c_proj"}


# ---- heads ------------------------------------------------------------------------------
def test_real_class_name_lists_and_templates() -> None:
    counts = {d: len(_names(d)) for d in REAL_LISTS}
    assert counts == {"caltech101": 101, "eurosat": 10, "flowers102": 102, "mnist": 10, "oxford-pets": 37}
    assert readable_classnames("caltech101", [f"c{i}" for i in range(101)]) == _names("caltech101")
    assert readable_classnames("food101", ["apple_pie", "baby_back_ribs"]) == ("apple pie", "baby back ribs")
    assert len(prompt_templates("caltech101")) == 34 and all("{c}" in t for t in prompt_templates("sun397"))


def test_mtil_heads_score_each_task_among_its_own_classes(backbone: CLIPBackbone) -> None:
    stream = _stream("task-incremental", REAL_LISTS)
    backbone.bind(stream)
    backbone.eval_start()
    head = backbone._eval_head
    assert head is not None and head.shape == (260, 32)
    assert torch.allclose(head.norm(dim=1), torch.ones(260), atol=1e-5)
    images = torch.randn(6, 3, 32, 32)
    for exp in stream.experiences:
        classes = backbone.head_classes(exp)
        assert classes.tolist() == list(exp.class_ids)
        with torch.no_grad():
            feats = F.normalize(backbone.model.encode_image(images), dim=-1)
            predicted = classes[(feats @ head[classes].t()).argmax(dim=1)]
            y = predicted.clone()
            y[::2] = classes[0] if predicted[0] != classes[0] else classes[1]
            scores = backbone.score({"image": images, "y": y}, exp)
        assert scores.tolist() == (predicted == y).float().tolist()


def test_xtail_union_head_offsets_labels_by_domain(backbone: CLIPBackbone) -> None:
    stream = _stream("task-agnostic", REAL_LISTS)
    sizes = [len(_names(d)) for d in REAL_LISTS]
    offsets = [sum(sizes[:i]) for i in range(len(sizes))]
    assert stream.num_classes == sum(sizes) == 260
    for exp, offset, size in zip(stream.experiences, offsets, sizes, strict=True):
        assert exp.class_ids == tuple(range(offset, offset + size))
    backbone.bind(stream)
    assert backbone.head_classes(stream.experiences[2]).tolist() == list(range(260))  # union: no domain id
    prompts = backbone.prompts
    assert prompts is not None and len(prompts.tokens) == sum(len(prompt_templates(d)) * n for d, n in zip(REAL_LISTS, sizes, strict=True))


def test_ensemble_head_matches_a_manual_prompt_ensemble(backbone: CLIPBackbone) -> None:
    stream = _stream("task-incremental", ("eurosat",))
    backbone.bind(stream)
    backbone.eval_start()
    with torch.no_grad():
        prompts = [t.replace("{c}", stream.class_names[3]) for t in prompt_templates("eurosat")]
        per_prompt = F.normalize(backbone.model.encode_text(backbone.tokenizer(prompts)), dim=-1)
        expected = F.normalize(per_prompt.mean(dim=0), dim=-1)
    assert torch.allclose(backbone._eval_head[3], expected, atol=1e-5)


# ---- training loss ----------------------------------------------------------------------
def _reference_loss(img: torch.Tensor, cur: torch.Tensor, y_local: torch.Tensor, scale: torch.Tensor, with_t2i: bool) -> torch.Tensor:
    """§1.3 written term by term: CE over current classes (old ones are -inf) + multi-hot text->image."""
    i2t = torch.stack([-(scale * img[b] @ cur.t()).log_softmax(0)[y_local[b]] for b in range(len(img))]).mean()
    if not with_t2i:
        return i2t
    rows = []
    for c in range(len(cur)):
        log_p = (scale * cur[c] @ img.t()).log_softmax(0)
        rows.append(-sum(log_p[b] for b in range(len(img)) if y_local[b] == c) if (y_local == c).any() else torch.zeros(()))
    return i2t + torch.stack(rows).mean()


@pytest.mark.parametrize("trainable", ["text", "both"])
def test_loss_matches_the_reference_and_masks_previous_classes(tiny: dict[str, Any], trainable: str) -> None:
    backbone = build_clip(tiny["spec"])
    stream = _stream("task-incremental", ("mnist", "eurosat"))
    backbone.bind(stream)
    backbone.model.requires_grad_(False)
    backbone.model.transformer.resblocks[0].attn.q_proj.weight.requires_grad_(True)
    if trainable == "both":
        backbone.model.visual.transformer.resblocks[0].mlp.c_fc.weight.requires_grad_(True)
    images = torch.randn(5, 3, 32, 32)
    current = torch.tensor(stream.experiences[1].class_ids)
    y = current[torch.tensor([0, 3, 3, 9, 1])]
    batch = {"image": images, "y": y, "task_id": torch.ones(5, dtype=torch.long), "tasks": (1,)}
    loss = backbone.loss(batch)
    state = backbone._train_states[(1,)]
    assert state.previous_text.shape == (10, 32) and not state.previous_text.requires_grad  # mnist, encoded once
    assert state.include_text_to_image == (trainable == "both")
    img = F.normalize(backbone.model.encode_image(images), dim=-1)
    cur = backbone.prompts.first_template_embeddings(backbone.model, current)
    expected = _reference_loss(img, cur, y - current[0], backbone.model.logit_scale.exp(), trainable == "both")
    assert torch.allclose(loss, expected, atol=1e-5)
    loss.backward()
    assert backbone.model.transformer.resblocks[0].attn.q_proj.weight.grad.abs().sum() > 0


def test_loss_with_frozen_text_caches_current_texts(backbone: CLIPBackbone) -> None:
    stream = _stream("task-incremental", ("mnist", "eurosat"))
    backbone.bind(stream)
    backbone.model.requires_grad_(False)
    backbone.model.visual.transformer.resblocks[1].attn.v_proj.weight.requires_grad_(True)
    batch = {"image": torch.randn(4, 3, 32, 32), "y": torch.tensor([0, 1, 2, 2]), "task_id": torch.zeros(4, dtype=torch.long), "tasks": (0,)}
    backbone.loss(batch).backward()
    state = backbone._train_states[(0,)]
    assert state.frozen_current_text is not None and len(state.previous_text) == 0 and state.include_text_to_image
    assert backbone.model.visual.transformer.resblocks[1].attn.v_proj.weight.grad is not None
    logits = backbone.outputs({k: v for k, v in batch.items() if k != "tasks"})  # task ids read from task_id
    assert logits.shape == (4, 10)
    backbone.model.requires_grad_(False)


def test_collate_preprocesses_pil_images_by_mode(backbone: CLIPBackbone) -> None:
    items = [{"image": Image.new("RGB", (40, 50), (i * 40, 0, 0)), "y": i, "task_id": 2} for i in range(3)]
    backbone.model.eval()
    batch = backbone.collate(items)
    assert batch["image"].shape == (3, 3, 32, 32) and batch["tasks"] == (2,) and batch["y"].tolist() == [0, 1, 2]
    again = backbone.collate(items)
    assert torch.equal(batch["image"], again["image"])  # eval transform is deterministic


def test_bf16_autocast_scores_and_trains_close_to_fp32(tiny: dict[str, Any]) -> None:
    from clbench.training import autocast

    backbone = build_clip(tiny["spec"])
    stream = _stream("task-incremental", ("mnist",))
    backbone.bind(stream)
    backbone.model.requires_grad_(False)
    backbone.model.visual.transformer.resblocks[0].attn.q_proj.weight.requires_grad_(True)
    batch = {"image": torch.randn(6, 3, 32, 32), "y": torch.arange(6), "task_id": torch.zeros(6, dtype=torch.long), "tasks": (0,)}
    fp32 = backbone.loss(batch)
    with autocast(torch.device("cpu"), "bf16"):
        bf16 = backbone.loss(batch)
        backbone.eval_start()
        scores = backbone.score(batch, stream.experiences[0])
    bf16.backward()
    assert torch.isfinite(bf16) and abs(float(bf16.detach()) - float(fp32.detach())) < 0.05 * abs(float(fp32.detach()))
    assert scores.shape == (6,) and backbone.model.visual.transformer.resblocks[0].attn.q_proj.weight.grad is not None
