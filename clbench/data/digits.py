"""Split-Digits: scikit-learn's 8x8 handwritten digits (1797 images, ships with scikit-learn).

One fixed stratified train/test split (25% test, seeded by the benchmark's split seed) is cut
once; each task then takes the examples of its classes. Pixels are scaled to [0, 1].
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from clbench.api.stream import TensorTaskDataset
from clbench.data import LoaderContext, TaskData
from clbench.errors import UsageError


@lru_cache(maxsize=4)
def _split(test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    y = data.target.astype(np.int64)
    rng = np.random.RandomState(seed)
    test_mask = np.zeros(len(y), dtype=bool)
    for label in np.unique(y):
        idx = np.flatnonzero(y == label)
        rng.shuffle(idx)
        test_mask[idx[: int(round(len(idx) * test_fraction))]] = True
    return x[~test_mask], y[~test_mask], x[test_mask], y[test_mask]


def load_digits_task(options: Mapping[str, Any], ctx: LoaderContext) -> TaskData:
    """One Split-Digits task.

    Options:
        classes: the digits (0-9) of this task, e.g. ``[0, 1]``.
        test_fraction: share of each class held out for testing (default 0.25).
    """
    classes = [int(c) for c in options.get("classes", [])]
    if not classes or any(c < 0 or c > 9 for c in classes):
        raise UsageError(f"sklearn-digits needs classes: a list of digits 0-9, got {options.get('classes')!r}")
    x_tr, y_tr, x_te, y_te = _split(float(options.get("test_fraction", 0.25)), ctx.split_seed)

    local_of = np.full(10, -1, dtype=np.int64)
    local_of[classes] = np.arange(len(classes))  # local ids follow the task's listed class order

    def subset(x: np.ndarray, y: np.ndarray) -> TensorTaskDataset:
        keep = np.isin(y, classes)
        return TensorTaskDataset(torch.from_numpy(x[keep]), torch.from_numpy(local_of[y[keep]]), ctx.task_index)

    return TaskData(train=subset(x_tr, y_tr), test=subset(x_te, y_te), class_names=tuple(str(c) for c in classes), input_shape=(64,))
