"""Resolve a ``clip:<arch>@<tag or file>`` spec to an open_clip model, offline first.

* ``<arch>`` is an open_clip model name (``ViT-B-16``, ``ViT-B-16-quickgelu``, ...) or the path
  of a model-config JSON file (registered with ``open_clip.add_model_config``; the file stem
  becomes the model name), which is how tests and users run architectures open_clip lacks.
* ``@<tag>`` is an open_clip pretrained tag (``openai``, ``laion2b_s34b_b88k``, ...). The
  weights are taken from the Hugging Face or open_clip cache when present; otherwise they are
  downloaded only when ``$CLBENCH_ALLOW_DOWNLOAD=1`` (and ``$HF_HUB_OFFLINE`` is unset), else
  the run fails with one line saying how to get them.
* ``@<file>`` is a local checkpoint (a state dict, or ``{"state_dict": ...}``; ``.pt``,
  ``.pth``, ``.bin`` or ``.safetensors``) loaded through open_clip's own ``pretrained=<file>``
  path with ``weights_only`` loading.
* no ``@``: random initialisation (for tests and timing only).
"""

from __future__ import annotations

import difflib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clbench.asset_policy import ALLOW_DOWNLOAD_ENV, resolve_downloads
from clbench.errors import MissingAssetError, UsageError

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")
HF_WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CLIPSpec:
    """A parsed ``clip:`` spec.

    Attributes:
        arch: open_clip model name (after registering a config file, if one was given).
        weights: the pretrained tag or checkpoint path as written ('' = random init).
        is_file: whether ``weights`` names a local file.
    """

    arch: str
    weights: str = ""
    is_file: bool = False


@dataclass(frozen=True)
class ResolvedWeights:
    """What to pass to ``open_clip.create_model_and_transforms``."""

    pretrained: str | None
    options: dict[str, Any] = field(default_factory=dict)
    source: str = "random init"


def parse_spec(spec: str) -> CLIPSpec:
    """Split ``clip:<arch>[@<weights>]``; registers ``<arch>`` when it is a config JSON file.

    Raises:
        UsageError: malformed spec, missing config file or unknown architecture.
    """
    import open_clip

    prefix, _, rest = spec.partition(":")
    if prefix != "clip" or not rest:
        raise UsageError(f"bad CLIP spec {spec!r}: expected clip:<arch>@<pretrained tag or checkpoint file>, e.g. clip:ViT-B-16@openai")
    arch, _, weights = rest.partition("@")
    if arch.endswith(".json"):
        config = Path(arch).expanduser()
        if not config.is_file():
            raise UsageError(f"CLIP model config {arch!r} does not exist")
        open_clip.add_model_config(config)
        arch = config.stem
    known = open_clip.list_models()
    if arch not in known:
        close = difflib.get_close_matches(arch, known, n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(close)}?" if close else "see open_clip.list_models()"
        raise UsageError(f"unknown CLIP architecture {arch!r} in {spec!r}; {hint}")
    is_file = bool(weights) and (weights.endswith(CHECKPOINT_SUFFIXES) or "/" in weights or os.sep in weights or Path(weights).expanduser().exists())
    return CLIPSpec(arch=arch, weights=weights, is_file=is_file)


def _cached_pretrained_file(cfg: dict[str, Any]) -> str | None:
    """The local copy of a pretrained tag's weights in the HF or open_clip cache, if any."""
    hub = cfg.get("hf_hub", "")
    if hub:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:  # pragma: no cover - huggingface_hub ships with open_clip
            try_to_load_from_cache = None
        if try_to_load_from_cache is not None:
            # "org/name/" means the default weight files; "org/name/file" names one file.
            repo_id, filename = (hub.rstrip("/"), "") if hub.endswith("/") else os.path.split(hub)
            names = [filename] if filename else list(HF_WEIGHT_FILES)
            if filename.endswith(".bin"):
                names.insert(0, filename[: -len(".bin")] + ".safetensors")
            for name in names:
                found = try_to_load_from_cache(repo_id, name)
                if isinstance(found, str) and Path(found).is_file():
                    return found
    url = cfg.get("url", "")
    if url:
        local = Path("~/.cache/clip").expanduser() / os.path.basename(url)
        if local.is_file():
            return str(local)
    return None


def resolve_weights(parsed: CLIPSpec, spec: str, *, allow_download: bool | None = None) -> ResolvedWeights:
    """Decide where the weights come from without touching the network unless allowed
    (``allow_download``: see :func:`clbench.asset_policy.resolve_downloads`).

    Raises:
        UsageError: unknown pretrained tag.
        MissingAssetError: checkpoint file missing, or tag not cached and downloads not allowed.
    """
    import open_clip

    if not parsed.weights:
        return ResolvedWeights(pretrained=None)
    if parsed.is_file:
        path = Path(parsed.weights).expanduser()
        if not path.is_file():
            raise MissingAssetError(f"CLIP checkpoint {parsed.weights!r} (from {spec!r}) not found; pass an existing state-dict file or a pretrained tag such as openai")
        return ResolvedWeights(pretrained=str(path), source=str(path))
    cfg = open_clip.get_pretrained_cfg(parsed.arch, parsed.weights)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(parsed.arch)
        raise UsageError(f"unknown pretrained tag {parsed.weights!r} for CLIP {parsed.arch}; known: {', '.join(tags) or 'none (use a checkpoint file)'}")
    # A cached file is passed as a path, so the preprocessing and activation settings that
    # open_clip attaches to the tag must be passed explicitly.
    options: dict[str, Any] = {"image_mean": cfg.get("mean"), "image_std": cfg.get("std"),
                               "image_interpolation": cfg.get("interpolation"), "image_resize_mode": cfg.get("resize_mode")}
    if cfg.get("quick_gelu"):
        options["force_quick_gelu"] = True
    options = {k: v for k, v in options.items() if v is not None}
    cached = _cached_pretrained_file(cfg)
    if cached is not None:
        return ResolvedWeights(pretrained=cached, options=options, source=f"{parsed.weights} (cached at {cached})")
    if resolve_downloads(allow_download):
        log.info("downloading CLIP weights %s@%s", parsed.arch, parsed.weights)
        return ResolvedWeights(pretrained=parsed.weights, source=f"{parsed.weights} (downloaded)")
    where = cfg.get("hf_hub") or cfg.get("url") or "open_clip"
    raise MissingAssetError(
        f"CLIP weights {parsed.arch}@{parsed.weights} are not in the local caches (Hugging Face hub cache, ~/.cache/clip; source {where}); "
        f"rerun with --allow-download ({ALLOW_DOWNLOAD_ENV}=1, without HF_HUB_OFFLINE) to download them, or pass a local file as clip:{parsed.arch}@/path/to/checkpoint.pt")


def load_open_clip(spec: str, *, allow_download: bool | None = None) -> tuple[Any, Any, Any, Any, ResolvedWeights]:
    """Build ``(model, train_transform, eval_transform, tokenizer, weights)`` for ``spec``.

    Raises:
        UsageError, MissingAssetError: as described in :func:`parse_spec` / :func:`resolve_weights`.
    """
    import open_clip

    parsed = parse_spec(spec)
    weights = resolve_weights(parsed, spec, allow_download=allow_download)
    try:
        model, train_tf, eval_tf = open_clip.create_model_and_transforms(parsed.arch, pretrained=weights.pretrained, **weights.options)
    except RuntimeError as exc:  # a checkpoint that does not fit the architecture
        raise UsageError(f"cannot load {weights.source} into CLIP {parsed.arch}: {str(exc).splitlines()[0]}") from None
    try:
        tokenizer = open_clip.get_tokenizer(parsed.arch)
    except OSError as exc:  # HF tokenizers need the hub
        raise MissingAssetError(f"the tokenizer of CLIP {parsed.arch} is not available offline ({str(exc).splitlines()[0]}); "
                                f"set {ALLOW_DOWNLOAD_ENV}=1 once to cache it, or use a SimpleTokenizer architecture (ViT-*)") from None
    return model, train_tf, eval_tf, tokenizer, weights
