"""Checkpoints for resuming a killed run: the model's changed tensors plus strategy state.

Saving a full 7B-parameter model after every task would dominate a LoRA run, so a checkpoint
holds only tensors that differ from the model as it stood right after ``strategy.setup`` (the
pristine backbone plus freshly initialised adapters, both reproducible from the seed). Changes
are found by a BLAKE2 fingerprint of each tensor's bytes taken at setup. Resuming rebuilds that
state the same way, lets the strategy restore any grown structure, then loads the delta.

Files are written to temporary names and renamed; ``checkpoint.json`` is replaced last, so a run
killed mid-save resumes from the previous complete checkpoint. Everything loads with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

POINTER = "checkpoint.json"


def fingerprint(tensor: torch.Tensor) -> str:
    """A BLAKE2b digest of the tensor's dtype, shape and bytes."""
    t = tensor.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    data = t.contiguous().reshape(-1).view(torch.uint8) if t.numel() else t  # reshape: 0-dim tensors cannot be viewed as bytes
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{t.dtype}{tuple(t.shape)}".encode())
    digest.update(data.numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def fingerprints(model: nn.Module) -> dict[str, str]:
    """Fingerprint of every entry of ``model.state_dict()``."""
    return {name: fingerprint(t) for name, t in model.state_dict().items()}


def changed_state(model: nn.Module, reference: dict[str, str]) -> dict[str, torch.Tensor]:
    """Entries of ``model.state_dict()`` that are new or differ from ``reference``, on CPU."""
    return {name: t.detach().cpu().clone() for name, t in model.state_dict().items() if reference.get(name) != fingerprint(t)}


def _save_atomic(obj: Any, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_checkpoint(folder: Path, tasks_done: int, model_delta: dict[str, torch.Tensor], strategy_state: dict[str, Any], progress: dict[str, Any]) -> None:
    """Write the checkpoint after ``tasks_done`` tasks and point ``checkpoint.json`` at it.

    Args:
        folder: the run's checkpoint folder.
        tasks_done: trained tasks finished (1-based count).
        model_delta: changed model tensors (see :func:`changed_state`).
        strategy_state: the strategy's ``state_dict()`` (tensors and plain Python values).
        progress: JSON-ready runner state (matrix rows, timings, telemetry).
    """
    folder.mkdir(parents=True, exist_ok=True)
    name = f"task-{tasks_done:03d}.pt"
    _save_atomic({"model": model_delta, "strategy": strategy_state}, folder / name)
    pointer = {"tasks_done": tasks_done, "file": name, "progress": progress}
    fd, tmp = tempfile.mkstemp(prefix=f".{POINTER}.", suffix=".tmp", dir=folder)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(pointer, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, folder / POINTER)
    for old in folder.glob("task-*.pt"):
        if old.name != name:
            old.unlink()


def read_pointer(folder: Path) -> dict[str, Any] | None:
    """The latest complete checkpoint's pointer, or ``None`` when there is none."""
    try:
        return json.loads((folder / POINTER).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def load_checkpoint(folder: Path, pointer: dict[str, Any]) -> dict[str, Any]:
    """Load the tensors a pointer refers to (``weights_only=True``: no code runs)."""
    return torch.load(folder / pointer["file"], map_location="cpu", weights_only=True)


def restore_model(model: nn.Module, delta: dict[str, torch.Tensor]) -> None:
    """Load a delta into ``model``; every delta key must exist (structure was rebuilt first)."""
    state = model.state_dict()
    unknown = sorted(set(delta) - set(state))
    if unknown:
        raise RuntimeError(f"checkpoint has tensors the rebuilt model lacks: {', '.join(unknown[:5])}")
    with torch.no_grad():
        for name, value in delta.items():
            state[name].copy_(value)
