"""Task streams: what the runner iterates and what strategies may know about tasks.

An :class:`Experience` is one task's training and test data plus its identity (index, name,
classes, metric). A :class:`Stream` is the ordered experiences of one benchmark, with the
global label space and the protocol. Datasets yield plain ``dict`` examples; the backbone's
``collate`` turns a list of examples (or a batch dict from a dataset's ``__getitems__``) into
tensors, so a dataset can be a tensor store, a folder of images or a list of prompts.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import Dataset


@dataclass(frozen=True)
class Experience:
    """One task of a stream.

    Attributes:
        index: position in the benchmark (0-based), also the task id carried by examples.
        name: the task's name (the accuracy-matrix column label).
        train: training examples (empty for eval-only probes).
        test: evaluation examples.
        metric: the task's score, one of :data:`clbench.api.benchmark.TASK_METRICS`.
        class_ids: global label ids of this task's classes (classification), else empty.
        eval_only: a probe that is evaluated but never trained.
        templates: zero-shot prompt templates for the task's classes (``{}`` = class name).
    """

    index: int
    name: str
    train: Dataset[Any]
    test: Dataset[Any]
    metric: str = "accuracy"
    class_ids: tuple[int, ...] = ()
    eval_only: bool = False
    templates: tuple[str, ...] = ()


@dataclass(frozen=True)
class Stream:
    """The ordered experiences of a benchmark plus its label space.

    Attributes:
        protocol: one of :data:`clbench.api.benchmark.PROTOCOLS`.
        experiences: every task in benchmark order (trained tasks and probes).
        class_names: global label space (index = label id); empty for generation tasks.
        input_shape: shape of one input for tensor data (classic backbones size their input
            layer from it); ``None`` for text or image-file data.
    """

    protocol: str
    experiences: tuple[Experience, ...]
    class_names: tuple[str, ...] = ()
    input_shape: tuple[int, ...] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def tasks(self) -> tuple[Experience, ...]:
        """Trained experiences in order."""
        return tuple(e for e in self.experiences if not e.eval_only)

    @property
    def probes(self) -> tuple[Experience, ...]:
        """Eval-only experiences in order."""
        return tuple(e for e in self.experiences if e.eval_only)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def label_masks(self) -> torch.Tensor:
        """``[experiences, classes]`` booleans: the classes each experience's predictions may take.

        Under the task-incremental protocol an example is scored among its own task's classes
        only; under every other protocol among all classes (every row all ``True``).
        """
        masks = torch.ones(len(self.experiences), self.num_classes, dtype=torch.bool)
        if self.protocol == "task-incremental":
            masks.zero_()
            for exp in self.experiences:
                masks[exp.index, list(exp.class_ids)] = True
        return masks

    def __iter__(self) -> Iterator[Experience]:
        return iter(self.tasks)

    def __len__(self) -> int:
        return len(self.tasks)


class TensorTaskDataset(Dataset[dict[str, Any]]):
    """Examples held as tensors: ``x`` (inputs), ``y`` (global labels) and ``task_id``.

    Supports batched fetching (``__getitems__``), so a DataLoader gathers a whole batch with
    one indexing operation instead of one Python call per example.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, task_id: int) -> None:
        if len(x) != len(y):
            raise ValueError(f"inputs and labels differ in length: {len(x)} vs {len(y)}")
        self.x = x
        self.y = y.long()
        self.task_ids = torch.full((len(y),), task_id, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"x": self.x[i], "y": self.y[i], "task_id": self.task_ids[i]}

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return {"x": self.x[idx], "y": self.y[idx], "task_id": self.task_ids[idx]}


class ExampleListDataset(Dataset[dict[str, Any]]):
    """Examples held as a list of dicts (text prompts and answers, file paths, ...)."""

    def __init__(self, examples: Sequence[dict[str, Any]]) -> None:
        self.examples = list(examples)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.examples[i]


def concat_datasets(datasets: Sequence[Dataset[Any]]) -> Dataset[Any]:
    """Concatenate task datasets, keeping the batched fast path when all hold tensors."""
    if datasets and all(isinstance(d, TensorTaskDataset) for d in datasets):
        merged = TensorTaskDataset.__new__(TensorTaskDataset)
        merged.x = torch.cat([d.x for d in datasets])  # type: ignore[attr-defined]
        merged.y = torch.cat([d.y for d in datasets])  # type: ignore[attr-defined]
        merged.task_ids = torch.cat([d.task_ids for d in datasets])  # type: ignore[attr-defined]
        return merged
    if datasets and all(isinstance(d, ExampleListDataset) for d in datasets):
        return ExampleListDataset([e for d in datasets for e in d.examples])  # type: ignore[attr-defined]
    return torch.utils.data.ConcatDataset(list(datasets))
