"""Vision Transformers from timm with per-task linear heads (the CoSO / InfLoRA class-IL setup).

Spec forms (after the ``vit:`` prefix), optionally followed by ``?norm=none|model``:

* ``<timm name>``, e.g. ``vit_base_patch16_224.augreg_in21k``: timm weights from the Hugging
  Face cache only, unless ``$CLBENCH_ALLOW_DOWNLOAD=1`` (missing weights are a one-line
  :class:`MissingAssetError`);
* ``<timm name>@<file>``: the architecture with weights from a local checkpoint (``.safetensors``,
  ``.bin``/``.pth`` state dict, or ``.npz``), loaded through timm's own pretrained-file path;
* ``tiny``: a small randomly initialised ViT (64 wide, 2 blocks, 4 heads) sized at bind time from
  the data (tensor inputs such as 8×8 digits: patch 2; images: 32×32, patch 4) for offline tests.

``norm`` picks the input normalisation of images: ``none`` (default; pixels in [0, 1], as the
CoSO and InfLoRA code feed these checkpoints) or ``model`` (the checkpoint's mean and std).

Heads: class- and task-incremental streams get one linear head per task over that task's classes
(as the CoSO code's ``classifier_pool``); a domain-incremental stream gets one shared head. Logits
over the global label space are the visible heads' outputs placed at their classes' ids; classes
of hidden heads score ``-inf``. Every head is visible unless a strategy limits them with
:meth:`ViTBackbone.set_visible_tasks` (CoSO shows the heads of the tasks seen so far, its
inference rule). Task-incremental streams score each example against its own task's head only.

Examples are ``{"image": PIL.Image, "y", "task_id"}`` (images are cropped and flipped while the
model is in training mode, resized and centre-cropped in eval mode) or ``{"x": Tensor, "y",
"task_id"}`` with ``x`` of shape C×H×W or flat H·W (one channel, square).

Adapter targets: ``o`` (``attn.proj``), ``qkv`` (timm fuses the query, key and value projections
into one layer, so ``q``, ``k`` and ``v`` cannot be adapted separately), ``fc`` (``mlp.fc1``),
``proj`` (``mlp.fc2``), ``head`` (the task heads).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import default_collate

from clbench.api.adapters import ALL_LINEAR, ATTENTION, ATTENTION_OUT, KV, QV
from clbench.api.backbone import Backbone, Batch
from clbench.api.stream import Experience, Stream
from clbench.asset_policy import ALLOW_DOWNLOAD_ENV, resolve_downloads
from clbench.errors import MissingAssetError, UsageError

TINY = {"embed_dim": 64, "depth": 2, "num_heads": 4, "mlp_ratio": 2.0}
NORMS = ("none", "model")


class ViTClassifier(nn.Module):
    """A feature encoder (timm ViT without classifier) plus a list of linear task heads."""

    def __init__(self, encoder: nn.Module, feature_dim: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.feature_dim = feature_dim
        self.heads = nn.ModuleList()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features (B × D)."""
        return self.encoder(x)


class ViTBackbone(Backbone):
    """A timm Vision Transformer with per-task linear heads."""

    kind = "vit"
    target_patterns = {
        "o": ("encoder.blocks.*.attn.proj",),
        "qkv": ("encoder.blocks.*.attn.qkv",),
        "fc": ("encoder.blocks.*.mlp.fc1",),
        "proj": ("encoder.blocks.*.mlp.fc2",),
        "head": ("heads.*",),
    }
    # timm fuses q, k and v into one qkv linear, so every attention placement adapts it.
    adapter_placements = {QV: ("qkv",), KV: ("qkv",), ATTENTION: ("qkv", "o"), ATTENTION_OUT: ("o",), ALL_LINEAR: ("qkv", "o", "fc", "proj")}
    heads_untrained = True

    def __init__(self, spec: str, encoder: nn.Module | None, *, image_size: int | None = None, norm: str = "none",
                 mean: Sequence[float] = (0.0, 0.0, 0.0), std: Sequence[float] = (1.0, 1.0, 1.0)) -> None:
        model = ViTClassifier(encoder, int(encoder.num_features)) if encoder is not None else nn.Module()  # type: ignore[arg-type]
        super().__init__(spec, model)
        self.image_size = image_size
        self.norm = norm
        self.mean, self.std = (tuple(mean), tuple(std)) if norm == "model" else ((0.0,) * len(mean), (1.0,) * len(std))
        self.input_shape: tuple[int, ...] | None = None
        self.visible_tasks: int | None = None
        self.head_task: list[int] = []           # task index -> head index
        self.head_classes: list[torch.Tensor] = []  # head index -> global class ids
        self.local_lut = torch.zeros(0, 0, dtype=torch.long)  # head index x global class -> local id or -1
        self._transforms: dict[bool, Any] = {}

    # ---- building ----------------------------------------------------------------------------
    def bind(self, stream: Stream) -> None:
        super().bind(stream)
        if not stream.num_classes:
            raise UsageError(f"backbone {self.spec!r} needs a classification stream")
        if not isinstance(self.model, ViTClassifier):
            self._build_tiny(stream)
        self.input_shape = self._input_shape(stream)
        model = self.model
        assert isinstance(model, ViTClassifier)
        if stream.protocol == "domain-incremental":
            groups = [tuple(range(stream.num_classes))]
            self.head_task = [0] * len(stream.experiences)
        else:
            groups = [e.class_ids for e in stream.experiences]
            self.head_task = list(range(len(stream.experiences)))
        model.heads = nn.ModuleList(nn.Linear(model.feature_dim, len(ids)) for ids in groups)
        self.head_classes = [torch.tensor(ids, dtype=torch.long) for ids in groups]
        lut = torch.full((len(groups), stream.num_classes), -1, dtype=torch.long)
        for h, ids in enumerate(self.head_classes):
            lut[h, ids] = torch.arange(len(ids))
        self.local_lut = lut
        self.to(self.device)

    def _build_tiny(self, stream: Stream) -> None:
        from timm.models.vision_transformer import VisionTransformer

        if stream.input_shape is not None:
            channels, side, _ = _image_shape(stream.input_shape, self.spec)
        else:
            channels, side = 3, self.image_size or 32
        patch = max(1, side // 4)
        if side % patch:
            raise UsageError(f"backbone {self.spec!r}: input side {side} is not a multiple of the patch size {patch}")
        encoder = VisionTransformer(img_size=side, patch_size=patch, in_chans=channels, num_classes=0, **TINY)  # type: ignore[arg-type]
        self.image_size = side
        self.model = ViTClassifier(encoder, int(encoder.num_features))

    def _input_shape(self, stream: Stream) -> tuple[int, int, int]:
        encoder = self.model.encoder  # type: ignore[union-attr]
        size = encoder.patch_embed.img_size
        expected = (int(encoder.patch_embed.proj.in_channels), int(size[0]), int(size[1]))
        if stream.input_shape is not None:
            shape = _image_shape(stream.input_shape, self.spec)
            if shape != expected:
                raise UsageError(f"backbone {self.spec!r} takes {expected[0]}x{expected[1]}x{expected[2]} inputs; this stream's tensors are "
                                 f"{'x'.join(map(str, shape))} (use vit:tiny for small tensor data)")
        return expected

    def to(self, device: torch.device) -> ViTBackbone:
        super().to(device)
        self.local_lut = self.local_lut.to(device)
        self.head_classes = [c.to(device) for c in self.head_classes]
        return self

    # ---- inputs --------------------------------------------------------------------------------
    def _transform(self, train: bool) -> Any:
        if train not in self._transforms:
            from torchvision import transforms as T

            assert self.input_shape is not None
            size = self.input_shape[1]
            steps = [T.RandomResizedCrop(size), T.RandomHorizontalFlip()] if train else \
                [T.Resize(int(math.floor(size * 256 / 224))), T.CenterCrop(size)]
            self._transforms[train] = T.Compose([*steps, T.ToTensor(), T.Normalize(self.mean, self.std)])
        return self._transforms[train]

    def collate(self, items: Any) -> Batch:
        """Image examples are transformed (augmented in training mode); tensor examples stacked."""
        if isinstance(items, dict):
            return items
        if items and "image" in items[0]:
            from PIL import Image

            transform = self._transform(self.model.training)
            channels = "L" if self.input_shape is not None and self.input_shape[0] == 1 else "RGB"
            images = [e["image"] if isinstance(e["image"], Image.Image) else Image.open(e["image"]) for e in items]
            return {
                "x": torch.stack([transform(img.convert(channels)) for img in images]),
                "y": torch.as_tensor([int(e["y"]) for e in items], dtype=torch.long),
                "task_id": torch.as_tensor([int(e["task_id"]) for e in items], dtype=torch.long),
            }
        return default_collate(items)

    def pixels(self, batch: Batch) -> torch.Tensor:
        """The batch's inputs as B × C × H × W floats."""
        x = batch["x"]
        assert self.input_shape is not None
        if x.dim() != 4:
            x = x.reshape(x.shape[0], *self.input_shape)
        return x.float()

    # ---- heads ---------------------------------------------------------------------------------
    def set_visible_tasks(self, count: int | None) -> None:
        """Show the heads of the first ``count`` tasks only (``None``: every head)."""
        self.visible_tasks = count

    def head_parameters(self, task_index: int) -> list[nn.Parameter]:
        """Parameters of the head that serves task ``task_index``."""
        return list(self.model.heads[self.head_task[task_index]].parameters())  # type: ignore[index]

    def local_labels(self, labels: torch.Tensor, task_index: int) -> torch.Tensor:
        """Global labels mapped to positions in task ``task_index``'s head (-1: not in it)."""
        return self.local_lut[self.head_task[task_index]][labels]

    def head_logits(self, batch: Batch, task_index: int) -> torch.Tensor:
        """Logits of task ``task_index``'s head only (B × classes of that head)."""
        return self.model.heads[self.head_task[task_index]](self.model(self.pixels(batch)))  # type: ignore[index]

    def _visible_heads(self) -> list[int]:
        tasks = range(len(self.head_task) if self.visible_tasks is None else min(self.visible_tasks, len(self.head_task)))
        return sorted({self.head_task[t] for t in tasks})

    def outputs(self, batch: Batch) -> torch.Tensor:
        """Logits over the global label space (hidden heads' classes and, under the task-incremental
        protocol, other tasks' classes at ``-inf``)."""
        features = self.model(self.pixels(batch))
        assert self.stream is not None
        logits = features.new_full((features.shape[0], self.stream.num_classes), float("-inf"))
        for h in self._visible_heads():
            logits[:, self.head_classes[h]] = self.model.heads[h](features).to(logits.dtype)  # type: ignore[index]
        if self.stream.protocol == "task-incremental":
            heads = torch.as_tensor(self.head_task, device=logits.device)[batch["task_id"]]
            logits = logits.masked_fill(self.local_lut[heads] < 0, float("-inf"))
        return logits

    def loss(self, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(self.outputs(batch), batch["y"])

    def score(self, batch: Batch, experience: Experience) -> torch.Tensor:
        return (self.outputs(batch).argmax(dim=1) == batch["y"]).float()

    def adapter_targets(self, targets: Sequence[str]) -> dict[str, nn.Linear]:
        fused = [t for t in targets if t in ("q", "k", "v")]
        if fused:
            raise UsageError(f"timm ViTs fuse q, k and v into one layer; use target qkv instead of {', '.join(fused)}")
        return super().adapter_targets(targets)


def _image_shape(shape: tuple[int, ...], spec: str) -> tuple[int, int, int]:
    """C × H × W of a tensor input (a flat square H·W is one channel)."""
    if len(shape) == 3:
        return int(shape[0]), int(shape[1]), int(shape[2])
    if len(shape) == 2:
        return 1, int(shape[0]), int(shape[1])
    side = math.isqrt(int(shape[0])) if len(shape) == 1 else 0
    if len(shape) == 1 and side * side == shape[0]:
        return 1, side, side
    raise UsageError(f"backbone {spec!r} needs image-shaped inputs (C x H x W, H x W or a flat square), got shape {shape}")


def _cached_hub_weights(hub_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return any(isinstance(try_to_load_from_cache(hub_id, name), str) for name in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"))


def build_vit(spec: str, *, allow_download: bool | None = None) -> ViTBackbone:
    """Build the ViT backbone from ``vit:<timm name>[@<file>][?norm=none|model]`` or ``vit:tiny``
    (``allow_download``: see :func:`clbench.asset_policy.resolve_downloads`)."""
    _, _, rest = spec.partition(":")
    rest, _, query = rest.partition("?")
    norm = "none"
    if query:
        key, _, value = query.partition("=")
        if key != "norm" or value not in NORMS:
            raise UsageError(f"bad ViT spec {spec!r}: the only option is ?norm=none or ?norm=model")
        norm = value
    name, _, file = rest.partition("@")
    if not name:
        raise UsageError(f"bad ViT spec {spec!r}: expected vit:tiny, vit:<timm model name> or vit:<timm model name>@<checkpoint file>")
    if name == "tiny":
        if file:
            raise UsageError("vit:tiny is randomly initialised and sized from the data; it takes no checkpoint file")
        return ViTBackbone(spec, None, norm=norm)
    import timm

    if not timm.is_model(name.split(".")[0]):
        close = timm.list_models(f"*{name.split('.')[0]}*")[:3]
        raise UsageError(f"unknown timm model {name!r} in backbone spec {spec!r}" + (f"; e.g. {', '.join(close)}" if close else ""))
    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except (RuntimeError, ValueError):
        cfg = None
    overlay: dict[str, Any] = {}
    if file:
        path = Path(file).expanduser()
        if not path.is_file():
            raise MissingAssetError(f"ViT checkpoint {path} does not exist; pass an existing .safetensors/.bin/.pth/.npz file after '@'")
        overlay = {"file": str(path)}
    elif cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        # timm would silently fall back to random weights: never substitute a fake backbone.
        raise MissingAssetError(f"timm knows no pretrained weights for {name!r}; name a tagged model (e.g. vit_base_patch16_224.augreg_in21k) "
                                f"or pass a checkpoint as vit:{name}@/path/to/checkpoint")
    elif not resolve_downloads(allow_download) and not (cfg.hf_hub_id and _cached_hub_weights(cfg.hf_hub_id)):
        raise MissingAssetError(f"weights of timm model {name!r} are not in the Hugging Face cache ({cfg.hf_hub_id or cfg.url}); set "
                                f"{ALLOW_DOWNLOAD_ENV}=1 to download them or use vit:{name}@/path/to/checkpoint")
    try:
        encoder = timm.create_model(name, pretrained=True, num_classes=0, pretrained_cfg_overlay=overlay or None)
    except (OSError, RuntimeError, ValueError, KeyError) as exc:
        what = f"checkpoint {file}" if file else f"weights of {name!r}"
        raise MissingAssetError(f"cannot load {what} for backbone {spec!r}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    data_cfg = encoder.pretrained_cfg
    return ViTBackbone(spec, encoder, image_size=int(data_cfg.get("input_size", (3, 224, 224))[-1]), norm=norm,
                       mean=data_cfg.get("mean", (0.5,) * 3), std=data_cfg.get("std", (0.5,) * 3))
