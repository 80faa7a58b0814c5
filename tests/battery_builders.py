"""Builders of the bad-input battery's cases (``test_battery.py``): each returns a ``prepare(root)``
that damages one thing in a fresh copy of the prepared folder, or a ``patch(monkeypatch, root)``
that injects a fault after the snapshot."""

from __future__ import annotations

import fcntl
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from battery_support import BENCH, TINY_BENCH, edit_examples, edit_json, fail_writes
from test_registry import _fake_dist

RESULTS = Path("results") / BENCH / "finetune" / "seed-0" / "results.json"  # the report's results file
CKPT = Path("runs") / BENCH / "finetune" / "seed-1" / "checkpoint"  # the stopped run's checkpoint folder


def write(path: str, text: str | bytes) -> Callable[[Path], None]:
    def prepare(root: Path) -> None:
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(text if isinstance(text, bytes) else text.encode())
    return prepare


def bench_with(old: str, new: str) -> Callable[[Path], None]:
    assert old in TINY_BENCH, old
    return write("bench/bad.toml", TINY_BENCH.replace(old, new, 1))


def results_with(change: Callable[[dict[str, Any]], Any]) -> Callable[[Path], None]:
    return lambda root: edit_json(root / RESULTS, change)


def truncated(path: Path, keep: int) -> Callable[[Path], None]:
    return lambda root: (root / path).write_bytes((root / path).read_bytes()[:keep])


def examples_with(path: Path, change: Callable[[dict[str, Any]], Any]) -> Callable[[Path], None]:
    return lambda root: edit_examples(root / path, change)


def _budget_without_record(data: dict[str, Any]) -> None:  # results written before ``budget`` existed: the report reads ``train``
    data.pop("budget")
    data["train"]["lr"] = "fast"


def pointer_with(change: Callable[[dict[str, Any]], Any]) -> Callable[[Path], None]:
    return lambda root: edit_json(root / CKPT / "checkpoint.json", change)


def tensor_file(obj: Any) -> Callable[[Path], None]:
    """Replace the stopped run's checkpoint with one holding ``obj`` (through the real writer)."""
    from clbench.statefile import to_bytes

    return lambda root: (root / CKPT / "task-002.safetensors").write_bytes(to_bytes(obj))


def state_file(skeleton: Any) -> Callable[[Path], None]:
    """A checkpoint whose JSON state record is ``skeleton`` as given (no tensors)."""
    from safetensors.torch import save

    from clbench.statefile import FORMAT, METADATA_KEY

    return lambda root: (root / CKPT / "task-002.safetensors").write_bytes(
        save({}, metadata={"format": FORMAT, METADATA_KEY: json.dumps(skeleton)}))


def foreign_safetensors(tensors: dict[str, torch.Tensor]) -> Callable[[Path], None]:
    from safetensors.torch import save

    return lambda root: (root / CKPT / "task-002.safetensors").write_bytes(save(tensors))


def legacy_tensor_file(obj: Any) -> Callable[[Path], None]:
    """A pre-safetensors checkpoint (``task-002.pt``, pickled) that the pointer names."""
    def prepare(root: Path) -> None:
        pointer_with(lambda p: p.update(file="task-002.pt"))(root)
        torch.save(obj, root / CKPT / "task-002.pt")
    return prepare


def hold_lock(run: str) -> Callable[[Path], Callable[[], None]]:
    """Another holder of the run's lock (flock is per open file, so this process can play it)."""
    def prepare(root: Path) -> Callable[[], None]:
        path = root / "runs" / BENCH / "finetune" / f".{run}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, json.dumps({"pid": 4242, "host": "elsewhere", "started": "2026-01-01T00:00:00"}).encode())
        return lambda: os.close(fd)
    return prepare


def plugin(entry_points: str, modules: dict[str, str]) -> Callable[[pytest.MonkeyPatch, Path], None]:
    def patch(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
        from clbench import registry

        folder = root.parent / "plugins"
        _fake_dist(folder, "battery_plugin", entry_points, modules)
        monkeypatch.syspath_prepend(str(folder))
        monkeypatch.setattr(sys, "dont_write_bytecode", True)
        registry.refresh()
    return patch


def faults(code: int, target: str, occurrence: int = 1) -> Callable[[pytest.MonkeyPatch, Path], None]:
    return lambda monkeypatch, root: fail_writes(monkeypatch, code, target, occurrence)
