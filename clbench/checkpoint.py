"""Checkpoints for resuming a killed run: the model's changed tensors plus strategy state.

Saving a full 7B-parameter model after every task would dominate a LoRA run, so a checkpoint
holds only tensors that differ from the model as it stood right after ``strategy.setup`` (the
pristine backbone plus freshly initialised adapters, both reproducible from the seed). Changes
are found by a BLAKE2 fingerprint of each tensor's bytes taken at setup. Resuming rebuilds that
state the same way, lets the strategy restore any grown structure, then loads the delta.

A checkpoint is ``task-NNN.safetensors``: the tensors in safetensors, every other value (strategy
state such as bank sizes, task logs, ``{int: ...}`` maps) as JSON in its metadata
(:mod:`clbench.statefile`); nothing is unpickled on resume. Checkpoints written before this format
(``task-NNN.pt``, pickled by ``torch.save``) still resume: they load with
``torch.load(weights_only=True)``, which refuses any object that would run code.

Files are written to temporary names, fsynced and renamed (:mod:`clbench.safeio`);
``checkpoint.json`` is replaced last, so a run killed mid-save, or stopped by a full disk, resumes
from the previous complete checkpoint. Free space is checked before a checkpoint is written. A
damaged checkpoint (truncated, foreign bytes, a blocked pickle, a missing file, an inconsistent
pointer) is refused with one line naming the file and field.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from clbench import distributed, fsdp, statefile
from clbench.errors import ClbenchError, UsageError
from clbench.safeio import ensure_free_space, make_dirs, write_bytes_atomic

POINTER = "checkpoint.json"
SUFFIX = ".safetensors"
LEGACY_SUFFIX = ".pt"
"""Checkpoints pickled with ``torch.save`` before the safetensors format; resumed read-only."""


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
    """Fingerprint of every entry of ``model.state_dict()`` (of this rank's shard, for a tensor ``--fsdp`` sharded)."""
    return {name: fingerprint(fsdp.local_tensor(t)) for name, t in model.state_dict().items()}


def changed_state(model: nn.Module, reference: dict[str, str]) -> dict[str, torch.Tensor]:
    """Entries of ``model.state_dict()`` that are new or differ from ``reference``, whole and on CPU.

    On a model ``--fsdp`` sharded every rank must call this: each compares its own shards, the
    ranks agree on which tensors changed anywhere, and those are all-gathered (every rank gets
    them; rank 0 writes them).
    """
    state = model.state_dict()
    changed = [reference.get(name) != fingerprint(fsdp.local_tensor(t)) for name, t in state.items()]
    if distributed.is_distributed() and fsdp.is_sharded(model):  # a shard changed on one rank only still changed the tensor
        flags = torch.tensor(changed, dtype=torch.int32)
        distributed.all_reduce_sum_([flags])  # on the backend's device (NCCL: the GPU)
        changed = [f > 0 for f in flags.tolist()]
    return {name: fsdp.full_tensor(t.detach()).cpu().clone() for (name, t), moved in zip(state.items(), changed, strict=True) if moved}


def _nbytes(value: Any) -> int:
    """Bytes of the tensors in a (nested) state, to check free space before saving it."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(_nbytes(v) for v in value.values())
    if isinstance(value, list | tuple):
        return sum(_nbytes(v) for v in value)
    return 64


def save_checkpoint(folder: Path, tasks_done: int, model_delta: dict[str, torch.Tensor], strategy_state: dict[str, Any], progress: dict[str, Any],
                    companions: Mapping[Path, bytes] | None = None) -> None:
    """Write the checkpoint after ``tasks_done`` tasks and point ``checkpoint.json`` at it.

    The tensor file is written first (atomically), then the companion files, then the pointer
    replaces the old one, then older tensor files are deleted: at every instant the pointer names
    a complete checkpoint, and the companions hold at least what it names.

    Args:
        folder: the run's checkpoint folder.
        tasks_done: trained tasks finished (1-based count).
        model_delta: changed model tensors (see :func:`changed_state`).
        strategy_state: the strategy's ``state_dict()`` (tensors and plain Python values).
        progress: JSON-ready runner state (matrix rows, timings, telemetry).
        companions: files that advance with the checkpoint (the run's ``examples.npz``), by path.
            If the pointer cannot be written they are put back as they were (best effort: one
            left ahead of its pointer is harmless, a resume drops the rows past the checkpoint).

    Raises:
        StorageError: not enough free space, or a write failed (the previous checkpoint stays).
    """
    make_dirs(folder)
    name = checkpoint_name(tasks_done)
    payload = {"model": model_delta, "strategy": strategy_state}
    pointer = json.dumps({"tasks_done": tasks_done, "file": name, "progress": progress})
    companions = dict(companions or {})
    ensure_free_space(folder, _nbytes(payload) + 2 * len(pointer) + sum(map(len, companions.values())), f"checkpoint {folder / name}")
    write_bytes_atomic(folder / name, statefile.to_bytes(payload))
    before: dict[Path, bytes | None] = {}
    try:
        for path, data in companions.items():
            before[path] = _read_or_none(path)
            write_bytes_atomic(path, data)
        write_bytes_atomic(folder / POINTER, pointer.encode("utf-8"))
    except BaseException:
        (folder / name).unlink(missing_ok=True)  # never leave a tensor file no pointer names
        _put_back(before)
        raise
    prune(folder, name)


def _read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _put_back(before: dict[Path, bytes | None]) -> None:
    for path, data in before.items():
        with contextlib.suppress(ClbenchError, OSError):
            if data is None:
                path.unlink(missing_ok=True)
            else:
                write_bytes_atomic(path, data)


def prune(folder: Path, keep: str) -> None:
    """Delete tensor files other than ``keep`` (older checkpoints, or a newer one a kill left
    without its pointer)."""
    for old in [*folder.glob(f"task-*{SUFFIX}"), *folder.glob(f"task-*{LEGACY_SUFFIX}")]:
        if old.name != keep:
            with contextlib.suppress(OSError):
                old.unlink()


def checkpoint_name(tasks_done: int, suffix: str = SUFFIX) -> str:
    return f"task-{tasks_done:03d}{suffix}"


def damaged(folder: Path, detail: str) -> UsageError:
    """The one-line error for a checkpoint that cannot be resumed."""
    return UsageError(f"checkpoint {folder} is damaged ({detail}); rerun with --overwrite to start the run again")


def read_pointer(folder: Path, n_tasks: int | None = None) -> dict[str, Any] | None:
    """The latest complete checkpoint's pointer, or ``None`` when there is none.

    The pointer is checked field by field (``tasks_done`` in 1..n_tasks, ``file`` exactly the
    tensor file of that count, inside ``folder``; ``progress`` with its rows and records), so a
    damaged or hand-edited pointer is refused before anything is loaded.

    Raises:
        UsageError: the pointer exists but is unreadable or inconsistent (naming the field).
    """
    path = folder / POINTER
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise damaged(path, f"cannot read it: {exc.strerror or exc}") from None
    try:
        pointer = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise damaged(path, "not valid JSON") from None
    if not isinstance(pointer, dict):
        raise damaged(path, "not a JSON object")
    done = pointer.get("tasks_done")
    if isinstance(done, bool) or not isinstance(done, int) or done < 1 or (n_tasks is not None and done > n_tasks):
        raise damaged(path, f"field 'tasks_done' is {done!r}, not a task count" + (f" in 1..{n_tasks}" if n_tasks else ""))
    if pointer.get("file") not in (checkpoint_name(done), checkpoint_name(done, LEGACY_SUFFIX)):
        raise damaged(path, f"field 'file' is {pointer.get('file')!r}, expected {checkpoint_name(done)!r}")
    progress = pointer.get("progress")
    if not isinstance(progress, dict):
        raise damaged(path, "field 'progress' is missing")
    expected = {"identity": dict, "rows": list, "tasks": list, "telemetry": list, "created": str}
    for key, kind in expected.items():
        if not isinstance(progress.get(key), kind):
            raise damaged(path, f"field 'progress.{key}' is missing or not a {kind.__name__}")
    if not isinstance(progress.get("kv_initial", {}), dict):  # KV-cache measurements of row 0 (--kv-cache runs)
        raise damaged(path, "field 'progress.kv_initial' is not an object")
    rows = progress["rows"]
    if n_tasks is not None and len(rows) != n_tasks + 1:
        raise damaged(path, f"field 'progress.rows' has {len(rows)} rows, expected {n_tasks + 1}")
    if any(row is not None and not (isinstance(row, list) and all(isinstance(v, int | float) and not isinstance(v, bool) for v in row)) for row in rows):
        raise damaged(path, "field 'progress.rows' holds something other than rows of numbers")
    if any(row is None for row in rows[: done + 1]) or len(progress["tasks"]) != done or len(progress["telemetry"]) != done:
        raise damaged(path, f"field 'progress' does not hold {done} finished task(s)")
    return pointer


def load_checkpoint(folder: Path, pointer: dict[str, Any]) -> dict[str, Any]:
    """Load the state a pointer refers to; no code from the file runs.

    A ``.safetensors`` checkpoint is read by :mod:`clbench.statefile`; a legacy ``.pt`` one by
    ``torch.load(weights_only=True)``.

    Raises:
        UsageError: the file is missing, truncated, not a checkpoint or (legacy) holds objects
            ``weights_only`` refuses.
    """
    path = folder / pointer["file"]
    try:
        if path.suffix == LEGACY_SUFFIX:
            state = torch.load(path, map_location="cpu", weights_only=True)
        else:
            state = statefile.load(path)
    except FileNotFoundError:
        raise damaged(path, "the file is missing") from None
    except Exception as exc:  # truncated file, random bytes, a pickle weights_only blocks: all mean "damaged"
        raise damaged(path, f"{type(exc).__name__}: {_first_line(exc)}") from None
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict) or not isinstance(state.get("strategy"), dict):
        raise damaged(path, "it does not hold 'model' and 'strategy' states")
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state["model"].items()):
        raise damaged(path, "its 'model' state holds something other than named tensors")
    return state


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else ""


def restore_model(model: nn.Module, delta: dict[str, torch.Tensor]) -> None:
    """Load a delta into ``model``; every delta key must exist (structure was rebuilt first).
    Whole tensors go into a model ``--fsdp`` sharded as each rank's rows, with no communication."""
    state = model.state_dict()
    unknown = sorted(set(delta) - set(state))
    if unknown:
        raise RuntimeError(f"checkpoint has tensors the rebuilt model lacks: {', '.join(unknown[:5])}")
    for name, value in delta.items():
        fsdp.copy_full_(state[name], value)  # a sharded tensor takes this rank's rows
