"""DataLoader workers that keep an accelerator fed, with numbers that do not depend on their count.

``--workers N`` (``RunOptions.workers``) sets ``num_workers``; ``pin_memory`` follows the device
(CUDA) and workers persist across the epochs of a task. The default is ours: 0 on the CPU (the
offline data sets are small and in memory, and worker processes would compete with training for
the same cores), ``min(8, CPUs per process)`` on CUDA, where image decoding and CLIP preprocessing
would otherwise leave the GPU waiting (``perf/dataloader_throughput.py`` measures the pipeline).

Determinism: random training augmentation (CLIP's and timm's ``RandomResizedCrop``) runs in the
backbone's collate, which runs in whichever process fetches the batch. Each batch is therefore
numbered by the sampler (in the main process) and collated under a torch RNG seeded from the task's
seed and that number, inside ``torch.random.fork_rng``: the same batch gets the same augmentation
with 0, 1 or 8 workers, and the main process's RNG stream (dropout, ...) is untouched. A training
set that draws random examples itself when fetched (replay's memory draw) says so with
``draws_when_fetched = True`` and is always fetched in the main process.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler

__all__ = ["LoaderOptions", "NumberedBatches", "SeededCollate", "loader_options"]

MAX_DEFAULT_WORKERS = 8


@dataclass(frozen=True)
class LoaderOptions:
    """``DataLoader`` keyword arguments for one run."""

    workers: int = 0
    pin_memory: bool = False

    def kwargs(self, data: Any = None, persistent: bool = False) -> dict[str, Any]:
        workers = 0 if getattr(data, "draws_when_fetched", False) else self.workers
        return {"num_workers": workers, "pin_memory": self.pin_memory, "persistent_workers": persistent and workers > 0}


def loader_options(requested: int | None, device: torch.device) -> LoaderOptions:
    """The run's loader options: ``requested`` workers, or the device's default (see the module docstring)."""
    if requested is None:
        processes = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        requested = 0 if device.type == "cpu" else min(MAX_DEFAULT_WORKERS, max(1, (os.cpu_count() or 1) // processes))
    return LoaderOptions(workers=requested, pin_memory=device.type == "cuda")


class NumberedBatches(Sampler[list[tuple[int, int]]]):
    """Each batch of ``batches`` as ``(batch number, index)`` pairs; the count runs on across epochs."""

    def __init__(self, batches: Sampler[list[int]] | Sequence[list[int]]) -> None:
        self.batches = batches
        self.count = 0

    def __len__(self) -> int:
        return len(self.batches)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for batch in self.batches:
            number, self.count = self.count, self.count + 1
            yield [(number, i) for i in batch]


class NumberedDataset(Dataset[Any]):
    """Fetches ``(number, index)`` pairs from ``data``; returns ``(number, examples)``."""

    def __init__(self, data: Dataset[Any]) -> None:
        self.data = data
        self.draws_when_fetched = getattr(data, "draws_when_fetched", False)

    def __len__(self) -> int:
        return len(self.data)  # type: ignore[arg-type]

    def __getitem__(self, pair: tuple[int, int]) -> Any:
        return pair[0], self.data[pair[1]]

    def __getitems__(self, pairs: list[tuple[int, int]]) -> Any:
        indices = [i for _, i in pairs]
        fetch = getattr(self.data, "__getitems__", None)
        return pairs[0][0] if pairs else 0, fetch(indices) if fetch else [self.data[i] for i in indices]


class SeededCollate:
    """The backbone's collate under a torch RNG seeded by (task seed, batch number)."""

    def __init__(self, collate: Callable[[Any], Any], seed: int) -> None:
        self.collate, self.seed = collate, seed

    def __call__(self, numbered: Any) -> Any:
        number, items = numbered
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed((self.seed * 1_000_003 + number) % 2**63)  # the CPU generator only: CUDA's stream is untouched
            return self.collate(items)
