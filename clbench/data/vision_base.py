"""Shared pieces of the image loaders: a lazy image dataset, class selection, k-shot sampling.

Image datasets yield ``{"image": PIL.Image (RGB), "y": int, "task_id": int}``; the backbone's
``collate`` applies its own preprocessing. Images are read only when an example is fetched:
labels live in an array, so selecting classes, sampling shots and relabelling to global ids
(:meth:`ImageTaskDataset.relabel`, used by the stream builder) never open an image file.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from clbench.classcounts import KNOWN_CLASS_COUNTS, task_class_count  # noqa: F401 (re-exported: loaders and tests use them from here)
from clbench.errors import DataError, MissingAssetError, UsageError

ImageFetcher = Callable[[int], Image.Image]


class ImageTaskDataset(Dataset[dict[str, Any]]):
    """One task's images, fetched lazily from a source by index.

    Args:
        fetch: returns the image at a *source* index (any PIL mode; converted to RGB here).
        indices: source indices of this dataset's examples.
        labels: label of each example (local to the task until relabelled).
        task_id: the task index stamped on every example.
    """

    def __init__(self, fetch: ImageFetcher, indices: np.ndarray, labels: np.ndarray, task_id: int) -> None:
        if len(indices) != len(labels):
            raise ValueError(f"{len(indices)} indices but {len(labels)} labels")
        self.fetch = fetch
        self.indices = np.asarray(indices, dtype=np.int64)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.task_id = task_id

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        image = self.fetch(int(self.indices[i]))
        return {"image": image if image.mode == "RGB" else image.convert("RGB"), "y": int(self.labels[i]), "task_id": self.task_id}

    @property
    def targets(self) -> np.ndarray:
        """Labels of every example (no image is read)."""
        return self.labels

    def relabel(self, lookup: torch.Tensor) -> ImageTaskDataset:
        """A copy whose labels are ``lookup[label]`` (local -> global ids); images untouched."""
        return ImageTaskDataset(self.fetch, self.indices, lookup.cpu().numpy()[self.labels], self.task_id)


def open_rgb(path: Path) -> Image.Image:
    """Read an image file fully (closing it) as RGB.

    Raises:
        DataError: the file is missing, truncated or not an image, naming it.
    """
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:  # UnidentifiedImageError is an OSError
        raise DataError(f"image {path} cannot be read ({type(exc).__name__}: {str(exc)[:120]}); replace or remove it") from None


def dataset_rng(seed: int, *names: str) -> np.random.Generator:
    """A generator seeded by the protocol seed and names, independent of task order."""
    return np.random.default_rng([seed, *(zlib.crc32(n.encode()) for n in names)])


def parse_classes(options: Mapping[str, Any], num_classes: int, dataset: str) -> list[int]:
    """The ``classes`` option (dataset class indices, in task order); default all classes."""
    raw = options.get("classes")
    if raw is None:
        return list(range(num_classes))
    try:
        classes = [int(c) for c in raw]
    except (TypeError, ValueError):
        raise UsageError(f"{dataset}: classes must be a list of class indices, got {raw!r}") from None
    bad = [c for c in classes if not 0 <= c < num_classes]
    if bad or len(set(classes)) != len(classes) or not classes:
        raise UsageError(f"{dataset}: classes must be distinct indices in 0..{num_classes - 1}; got {raw!r}")
    return classes


def select_examples(targets: np.ndarray, classes: Sequence[int], k_shot: int | None, rng: np.random.Generator | None) -> tuple[np.ndarray, np.ndarray]:
    """Source indices and local labels of the examples of ``classes``.

    Local label ``i`` is ``classes[i]``. With ``k_shot``, ``k`` examples per class are drawn
    with ``rng`` without replacement, or with replacement when a class has fewer than ``k``
    (as the MoRAM/CoDyRA few-shot sampler does).
    """
    targets = np.asarray(targets, dtype=np.int64)
    chosen: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    for local, cls in enumerate(classes):
        members = np.flatnonzero(targets == cls)
        if k_shot is not None:
            if rng is None:
                raise ValueError("k-shot sampling needs a random generator")
            if len(members) == 0:
                raise UsageError(f"class {cls} has no training example to sample {k_shot} shots from")
            members = np.sort(rng.choice(members, size=k_shot, replace=len(members) < k_shot))
        chosen.append(members)
        labels.append(np.full(len(members), local, dtype=np.int64))
    if not chosen:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(chosen), np.concatenate(labels)


def parse_k_shot(options: Mapping[str, Any], dataset: str) -> int | None:
    """The ``k_shot`` option (examples per class in training; absent or 0 = all)."""
    raw = options.get("k_shot")
    if raw in (None, 0, -1):
        return None
    if not isinstance(raw, int) or raw < 1:
        raise UsageError(f"{dataset}: k_shot must be a positive integer, got {raw!r}")
    return raw


def random_split(n: int, train_fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train/test split of ``range(n)`` for datasets without an official split."""
    order = rng.permutation(n)
    cut = int(round(n * train_fraction))
    return np.sort(order[:cut]), np.sort(order[cut:])


def stratified_split(targets: np.ndarray, train_fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Seeded per-class train/test split (every class with 2+ examples lands in both parts)."""
    targets = np.asarray(targets, dtype=np.int64)
    train: list[np.ndarray] = []
    test: list[np.ndarray] = []
    for cls in np.unique(targets):
        members = rng.permutation(np.flatnonzero(targets == cls))
        cut = int(round(len(members) * train_fraction))
        if len(members) >= 2:
            cut = min(max(cut, 1), len(members) - 1)
        train.append(members[:cut])
        test.append(members[cut:])
    empty = np.zeros(0, dtype=np.int64)
    return np.sort(np.concatenate(train)) if train else empty, np.sort(np.concatenate(test)) if test else empty


def require_root(data_root: Path | None, dataset: str, how: str) -> Path:
    """The data root, or a one-line error saying how to give one."""
    if data_root is None:
        raise MissingAssetError(f"dataset {dataset} needs a data root: pass --data-root DIR or set CLBENCH_DATA_ROOT ({how})")
    return Path(data_root).expanduser()
