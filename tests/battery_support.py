"""Helpers of the bad-input battery (tests/test_battery.py) and the process-level safety tests.

The battery runs every case against a copy of one prepared folder (:func:`build_template`):
a finished run, a run stopped after two of its three tasks, a benchmark file, Fashion-MNIST
and ImageNet-R layouts and a results file with its per-example scores, so each case can damage exactly one thing and the
test can check that nothing else moved (:func:`snapshot`).
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from test_vision_fixtures import save_image, write_mnist_like

BENCH = "digits-tiny"


def bench_toml(description: str, backbone: str, tasks: list[tuple[str, str, str]], train: str = "") -> str:
    """A benchmark file: ``tasks`` are (name, loader, options as an inline TOML table)."""
    head = f'version = 1\ndescription = "{description}"\nprotocol = "class-incremental"\nbackbone = "{backbone}"\nstrategies = ["finetune"]\n'
    body = "".join(f'[[tasks]]\nname = "{name}"\nloader = "{loader}"\noptions = {options}\n' for name, loader, options in tasks)
    return head + (f"[train]\n{train}" if train else "") + body


def digit_tasks(count: int) -> list[tuple[str, str, str]]:
    return [("abcdefgh"[t], "sklearn-digits", f"{{ classes = [{2 * t}, {2 * t + 1}] }}") for t in range(count)]


TINY_BENCH = bench_toml("Three tasks of split digits, one epoch each, for the safety battery.", "mlp:16", digit_tasks(3),
                        "epochs = 1\nbatch_size = 64\nlr = 0.01\n")
FASHION_BENCH = bench_toml("Fashion-MNIST from --data-root.", "mlp:8", [("a", "fashion-mnist", "{ classes = [0, 1] }")])
IMAGENET_R_BENCH = bench_toml("ImageNet-R from --data-root on a tiny random ViT.", "vit:tiny", [("a", "imagenet-r", "{ classes = [0, 1] }")],
                              "batch_size = 4\n")
WNIDS = ("n01443537", "n01484850")


def finished_dir(root: Path) -> Path:
    """The finished run of the template: finetune, seed 0."""
    return root / "runs" / BENCH / "finetune" / "seed-0"


def partial_dir(root: Path) -> Path:
    """The stopped run of the template: finetune, seed 1, tasks 1-2 checkpointed."""
    return root / "runs" / BENCH / "finetune" / "seed-1"


def build_template(root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Write the shared starting folder of every battery case under ``root``."""
    from clbench import runner
    from clbench.runner import RunOptions, run

    root.mkdir(parents=True, exist_ok=True)
    bench = root / "bench" / f"{BENCH}.toml"
    bench.parent.mkdir()
    bench.write_text(TINY_BENCH, encoding="utf-8")
    run(RunOptions(benchmark=str(bench), strategy="finetune", seed=0, out=root / "runs", progress=False))

    calls = {"n": 0}
    real_train = runner.train_task

    def stop_in_task_3(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_train(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(runner, "train_task", stop_in_task_3)
        with pytest.raises(KeyboardInterrupt):
            run(RunOptions(benchmark=str(bench), strategy="finetune", seed=1, out=root / "runs", progress=False))
    assert json.loads((partial_dir(root) / "checkpoint" / "checkpoint.json").read_text())["tasks_done"] == 2

    (root / "bench" / "fashion.toml").write_text(FASHION_BENCH, encoding="utf-8")
    write_mnist_like(root / "fashion" / "FashionMNIST" / "raw", per_class=3, test_per_class=2)
    (root / "bench" / "imagenet-r.toml").write_text(IMAGENET_R_BENCH, encoding="utf-8")
    for label, wnid in enumerate(WNIDS):
        for i in range(3):
            save_image(root / "inr" / "imagenet-r" / wnid / f"{i}.jpg", label, i)
    (root / "afile").write_text("not a folder\n", encoding="utf-8")
    results = root / "results" / BENCH / "finetune" / "seed-0"
    results.mkdir(parents=True)
    shutil.copy(finished_dir(root) / "results.json", results / "results.json")
    shutil.copy(finished_dir(root) / "examples.npz", results / "examples.npz")
    return root


def snapshot(root: Path) -> dict[str, Any]:
    """Every path under ``root`` with its kind and content hash (``run.log`` kept whole, see
    :func:`assert_unchanged`)."""
    found: dict[str, Any] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            found[os.path.relpath(os.path.join(dirpath, name), root)] = "dir"
        for name in filenames:
            path = Path(dirpath) / name
            data = path.read_bytes()
            found[os.path.relpath(path, root)] = data if name == "run.log" else hashlib.sha256(data).hexdigest()
    return found


def assert_unchanged(before: dict[str, Any], after: dict[str, Any]) -> None:
    """No path appeared or vanished and no file changed; a ``run.log`` may only have grown."""
    assert sorted(after) == sorted(before), f"added {sorted(set(after) - set(before))}, removed {sorted(set(before) - set(after))}"
    for path, old in before.items():
        new = after[path]
        if isinstance(old, bytes):
            assert new.startswith(old), f"{path} was rewritten, not appended to"
        else:
            assert new == old, f"{path} changed"


def fail_writes(monkeypatch: pytest.MonkeyPatch, code: int, target: str, occurrence: int = 1) -> None:
    """Make clbench's ``occurrence``-th atomic write of a file named ``target`` fail with ``code``
    (ENOSPC, EIO, ...), as the file system would: the error comes from ``os.write``."""
    from clbench import safeio

    seen: dict[str, int] = {}  # temp file name (unique per write) -> its rank among writes of target
    real = safeio._write

    def write(fd: int, data: memoryview) -> int:
        name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
        if name.startswith(f".{target}."):
            seen.setdefault(name, len(seen) + 1)
            if seen[name] == occurrence:
                raise OSError(code, os.strerror(code))
        return real(fd, data)

    monkeypatch.setattr(safeio, "_write", write)


def no_free_space(monkeypatch: pytest.MonkeyPatch) -> None:
    """``shutil.disk_usage`` reports a full disk (the checkpoint's free-space check must refuse)."""
    import shutil as shutil_module

    monkeypatch.setattr(shutil_module, "disk_usage", lambda path: shutil_module._ntuple_diskusage(10 << 30, 10 << 30, 4096))


def edit_json(path: Path, change: Callable[[Any], Any]) -> None:
    """Apply ``change`` to the parsed file in place (its return value is ignored) and save it."""
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(json.dumps(data), encoding="utf-8")


def edit_examples(path: Path, change: Callable[[dict[str, np.ndarray]], Any]) -> None:
    """Apply ``change`` to the arrays of an ``examples.npz`` in place and save them (a damaged or
    foreign per-example scores file that is still a valid ``.npz``)."""
    with np.load(path) as data:
        arrays = {name: data[name] for name in data.files}
    change(arrays)
    with path.open("wb") as handle:
        np.savez(handle, **arrays)


def gzip_bytes(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def idx_labels(labels: list[int]) -> bytes:
    array = np.asarray(labels, dtype=np.uint8)
    return bytes([0, 0, 0x08, 1]) + len(array).to_bytes(4, "big") + array.tobytes()


def clbench_command() -> list[str]:
    return [str(Path(sys.executable).with_name("clbench"))]


STORAGE_ERRNOS = {"ENOSPC": errno.ENOSPC, "EIO": errno.EIO, "EDQUOT": errno.EDQUOT, "EFBIG": errno.EFBIG, "EROFS": errno.EROFS}


def seed_folder(parent: Path, seed: int) -> Path:
    """The one run folder of ``seed`` under ``OUT/BENCHMARK/STRATEGY``: ``seed-N``, or ``seed-N-S-…`` when the run had -S settings."""
    found = [p for p in parent.iterdir() if p.is_dir() and (p.name == f"seed-{seed}" or p.name.startswith(f"seed-{seed}-"))]
    assert len(found) == 1, f"expected one run folder of seed {seed} in {parent}: {sorted(p.name for p in parent.iterdir())}"
    return found[0]
