"""CLIP backbones on open_clip: zero-shot text heads, per-task and union heads, the CL loss.

Spec: ``clip:<arch>@<pretrained tag or checkpoint file>`` (see :mod:`clbench.backbones.clip_loading`),
e.g. ``clip:ViT-B-16@openai`` or ``clip:ViT-B-16-quickgelu@/ckpt/openai-b16.pt``.

Adapter targets. Every ``nn.MultiheadAttention`` is replaced at load time by
:class:`~clbench.backbones.clip_attention.SplitMultiheadAttention` (same outputs, separate
``q_proj``/``k_proj``/``v_proj``/``out_proj`` linears), so adapters can wrap each projection:

=========================  ===============================================================
target                     layers
=========================  ===============================================================
``q k v o fc proj``        attention q/k/v/out and MLP ``c_fc``/``c_proj`` of **both** encoders
``vision.q`` ... ``vision.proj``  that layer in the image encoder only
``text.q`` ... ``text.proj``      that layer in the text encoder only
``vision.all`` / ``text.all``     all six layers of one encoder
=========================  ===============================================================

Heads. Classes are scored by cosine similarity against prompt-ensemble text embeddings (class
names x the task's templates, see :mod:`clbench.backbones.clip_heads`), recomputed once per
evaluation pass. Task-incremental benchmarks (MTIL) score each test example among its own
task's classes; every other protocol (X-TAIL's task-agnostic union, class- and
domain-incremental) scores among every class of the benchmark, whose ids the stream builder
offsets per task.

Training loss: the MoRAM and CoDyRA official code's (:mod:`clbench.backbones.clip_loss`). The current classes'
text embeddings use each class's first template (one prompt per class, recomputed every step
when the text encoder has trainable parameters, cached per task when it has none); earlier
tasks' classes are encoded once per task without gradient and masked.
"""

from __future__ import annotations

import types
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from clbench.api.adapters import TRANSFORMER_PLACEMENTS
from clbench.api.backbone import Backbone, Batch
from clbench.api.stream import Experience, Stream
from clbench.backbones.clip_attention import split_attention_modules
from clbench.backbones.clip_heads import DEFAULT_TEMPLATES, PromptBank
from clbench.backbones.clip_loading import load_open_clip
from clbench.backbones.clip_loss import clip_continual_loss
from clbench.errors import UsageError

# Module-name prefixes of the residual blocks of each encoder (CLIP and CustomTextCLIP layouts).
ENCODER_PREFIXES = {"vision": ("visual.transformer.resblocks.*.",), "text": ("transformer.resblocks.*.", "text.transformer.resblocks.*.")}
LAYER_SUFFIXES = {"q": "attn.q_proj", "k": "attn.k_proj", "v": "attn.v_proj", "o": "attn.out_proj", "fc": "mlp.c_fc", "proj": "mlp.c_proj"}
NON_ENCODER_PARAMS = ("logit_scale", "logit_bias")


def _weight_dtype_from_norm(block: nn.Module) -> torch.dtype:
    """The block's parameter dtype, read from its first LayerNorm (never wrapped by adapters)."""
    return block.ln_1.weight.dtype  # type: ignore[no-any-return]


def make_adapter_safe(model: nn.Module) -> None:
    """Let open_clip find its cast dtype after adapters wrap ``mlp.c_fc``.

    open_clip reads ``resblocks[0].mlp.c_fc.weight.dtype`` on every ``encode_text``; an adapter
    wrapper has no ``weight``, so each residual block reads the dtype from its LayerNorm
    instead (a bound method, so deep copies of the model stay bound to their own blocks).
    """
    for module in model.modules():
        if hasattr(module, "get_weight_dtype") and hasattr(module, "ln_1"):
            module.get_weight_dtype = types.MethodType(_weight_dtype_from_norm, module)


def clip_target_patterns() -> dict[str, tuple[str, ...]]:
    """Generic target names -> module-name globs (see the module docstring's table)."""
    patterns: dict[str, tuple[str, ...]] = {}
    for target, suffix in LAYER_SUFFIXES.items():
        patterns[target] = tuple(prefix + suffix for prefixes in ENCODER_PREFIXES.values() for prefix in prefixes)
        for encoder, prefixes in ENCODER_PREFIXES.items():
            patterns[f"{encoder}.{target}"] = tuple(prefix + suffix for prefix in prefixes)
    for encoder, prefixes in ENCODER_PREFIXES.items():
        patterns[f"{encoder}.all"] = tuple(prefix + suffix for prefix in prefixes for suffix in LAYER_SUFFIXES.values())
    return patterns


@dataclass
class _TaskTrainingState:
    """Per-task training tensors, built once when a task's first batch arrives."""

    previous_text: torch.Tensor  # (P, D) earlier tasks' class texts, no grad
    current_ids: torch.Tensor  # (C,) global ids of the current classes
    local_index: torch.Tensor  # (num_classes,) global id -> position in current_ids (-1 elsewhere)
    include_text_to_image: bool  # the image encoder has trainable parameters
    frozen_current_text: torch.Tensor | None  # cached current texts when the text encoder is frozen


class CLIPBackbone(Backbone):
    """A CLIP model (open_clip) with split attention projections and zero-shot text heads.

    Args:
        spec: the spec string (recorded in results).
        model: an open_clip ``CLIP`` model; its attention modules are split in place.
        train_transform: image preprocessing for training batches.
        eval_transform: image preprocessing for evaluation batches.
        tokenizer: the model's tokenizer (``list[str] -> LongTensor``).
        weights_source: where the weights came from (recorded in results).
    """

    kind = "clip"
    target_patterns = clip_target_patterns()
    adapter_placements = TRANSFORMER_PLACEMENTS

    def __init__(self, spec: str, model: nn.Module, train_transform: Any, eval_transform: Any, tokenizer: Any, weights_source: str = "") -> None:
        split_attention_modules(model)
        make_adapter_safe(model)
        super().__init__(spec, model)
        self.train_transform = train_transform
        self.eval_transform = eval_transform
        self.tokenizer = tokenizer
        self.weights_source = weights_source
        self.prompts: PromptBank | None = None
        self.task_classes: list[torch.Tensor] = []
        self._eval_head: torch.Tensor | None = None
        self._train_states: dict[tuple[int, ...], _TaskTrainingState] = {}

    # ---- set-up -------------------------------------------------------------------------
    def bind(self, stream: Stream) -> None:
        """Tokenise every class's prompts (class names x its task's templates)."""
        super().bind(stream)
        if not stream.class_names:
            raise UsageError(f"backbone {self.spec!r} needs a classification benchmark (tasks with class names)")
        templates: list[Sequence[str] | None] = [None] * stream.num_classes
        for exp in stream.experiences:
            for cid in exp.class_ids:
                if templates[cid] is None:  # a class shared by domains keeps its first task's templates
                    templates[cid] = exp.templates or DEFAULT_TEMPLATES
        self.prompts = PromptBank(stream.class_names, [t or DEFAULT_TEMPLATES for t in templates], self.tokenizer).to(self.device)
        self.task_classes = [torch.tensor(exp.class_ids, dtype=torch.long, device=self.device) for exp in stream.experiences]
        self._eval_head = None
        self._train_states.clear()

    def to(self, device: torch.device) -> CLIPBackbone:
        super().to(device)
        if self.prompts is not None:
            self.prompts.to(device)
        self.task_classes = [c.to(device) for c in self.task_classes]
        self._eval_head = None
        self._train_states.clear()
        return self

    def collate(self, items: Any) -> Batch:
        """Preprocess PIL images (train or eval transform by the model's mode) into a batch.

        Items are ``{"image", "y", "task_id"}`` dicts (``image`` a PIL image or a ``(3, H, W)``
        tensor); a batch from a tensor dataset's ``__getitems__`` (``x``) is accepted too. The
        batch carries ``tasks``, the sorted task ids present, as a plain tuple so the loss can
        pick its per-task state without a device synchronisation.
        """
        if isinstance(items, dict):
            images = items["x"] if "x" in items else items["image"]
            y, task_ids = torch.as_tensor(items["y"]), torch.as_tensor(items["task_id"])
        else:
            transform = self.train_transform if self.model.training else self.eval_transform
            pictures = [item["image"] if "image" in item else item["x"] for item in items]
            images = torch.stack([p if torch.is_tensor(p) else transform(p) for p in pictures])
            y = torch.tensor([int(item["y"]) for item in items], dtype=torch.long)
            task_ids = torch.tensor([int(item["task_id"]) for item in items], dtype=torch.long)
        return {"image": images, "y": y, "task_id": task_ids, "tasks": tuple(sorted(set(task_ids.tolist())))}

    # ---- scoring ------------------------------------------------------------------------
    def _bank(self) -> PromptBank:
        if self.prompts is None:
            raise RuntimeError("CLIP backbone used before bind(stream)")
        return self.prompts

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised image embeddings."""
        return F.normalize(self.model.encode_image(images), dim=-1)

    def eval_start(self) -> None:
        """Encode every class's prompt ensemble once for this evaluation pass."""
        self._eval_head = self._bank().ensemble_head(self.model)
        self._train_states.clear()  # the weights changed since the states were built

    def head_classes(self, experience: Experience) -> torch.Tensor:
        """Global ids of the classes a test example of ``experience`` is scored among."""
        if self.stream is not None and self.stream.protocol == "task-incremental":
            return self.task_classes[experience.index]
        return torch.arange(self._bank().num_classes, device=self.device)

    def score(self, batch: Batch, experience: Experience) -> torch.Tensor:
        if self._eval_head is None:
            self.eval_start()
        assert self._eval_head is not None
        classes = self.head_classes(experience)
        logits = self.image_features(batch["image"]) @ self._eval_head[classes].t().to(self._compute_dtype())
        return (classes[logits.argmax(dim=1)] == batch["y"]).float()

    def _compute_dtype(self) -> torch.dtype:
        device_type = self.device.type
        return torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else torch.float32

    def outputs(self, batch: Batch) -> torch.Tensor:
        """Image-to-text logits over the classes of the batch's tasks (first-template texts).

        Columns follow the ascending global ids of those classes; texts are encoded under the
        caller's grad mode, so a distillation loss gets gradients into an adapted text encoder.
        """
        classes = torch.cat([self.task_classes[t] for t in self.batch_tasks(batch)]).unique()
        texts = self._bank().first_template_embeddings(self.model, classes)
        return self.model.logit_scale.exp() * self.image_features(batch["image"]) @ texts.t()

    # ---- training -----------------------------------------------------------------------
    @staticmethod
    def batch_tasks(batch: Batch) -> tuple[int, ...]:
        """The sorted task ids of a batch (from ``collate``'s ``tasks``, else from ``task_id``)."""
        tasks = batch.get("tasks")
        if tasks is None:  # a batch not made by collate: one synchronisation to read the ids
            tasks = tuple(sorted(set(torch.as_tensor(batch["task_id"]).reshape(-1).tolist())))
        return tuple(tasks)

    def _trainable(self, vision: bool) -> bool:
        for name, param in self.model.named_parameters():
            if not param.requires_grad or name in NON_ENCODER_PARAMS:
                continue
            if name.startswith("visual.") == vision:
                return True
        return False

    def _training_state(self, tasks: tuple[int, ...]) -> _TaskTrainingState:
        state = self._train_states.get(tasks)
        if state is not None:
            return state
        bank = self._bank()
        current = torch.cat([self.task_classes[t] for t in tasks]).unique()
        stream = self.stream
        assert stream is not None
        earlier = [self.task_classes[e.index] for e in stream.experiences if e.index < max(tasks) and not e.eval_only]
        previous = torch.cat(earlier).unique() if earlier else current[:0]
        previous = previous[~torch.isin(previous, current)]
        with torch.no_grad():
            previous_text = bank.first_template_embeddings(self.model, previous) if len(previous) else torch.zeros(0, 1, device=self.device)
        local_index = torch.full((bank.num_classes,), -1, dtype=torch.long, device=self.device)
        local_index[current] = torch.arange(len(current), device=self.device)
        frozen = None
        if not self._trainable(vision=False):
            with torch.no_grad():
                frozen = bank.first_template_embeddings(self.model, current)
        state = _TaskTrainingState(previous_text, current, local_index, self._trainable(vision=True), frozen)
        self._train_states[tasks] = state
        return state

    def loss(self, batch: Batch) -> torch.Tensor:
        """The §1.3 CLIP loss for the classes of the batch's task(s)."""
        state = self._training_state(self.batch_tasks(batch))
        current_text = state.frozen_current_text
        if current_text is None:
            current_text = self._bank().first_template_embeddings(self.model, state.current_ids)
        return clip_continual_loss(self.image_features(batch["image"]), state.previous_text, current_text, state.local_index[batch["y"]],
                                   self.model.logit_scale.exp(), include_text_to_image=state.include_text_to_image)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "weights": self.weights_source}


def build_clip(spec: str, *, allow_download: bool | None = None) -> CLIPBackbone:
    """CLIP on open_clip: clip:<arch>@<pretrained tag or checkpoint file> (e.g. clip:ViT-B-16@openai);
    ``allow_download``: see :func:`clbench.asset_policy.resolve_downloads`."""
    model, train_tf, eval_tf, tokenizer, weights = load_open_clip(spec, allow_download=allow_download)
    return CLIPBackbone(spec, model, train_tf, eval_tf, tokenizer, weights.source)
