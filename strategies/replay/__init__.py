"""``replay``: experience replay from a reservoir buffer (Chaudhry et al. 2019).

A fixed-size memory (size in examples) keeps a uniform, seeded reservoir sample of every
training example of the tasks seen so far. While training task ``t``, every batch of current
examples is extended with ``replay_batch_size`` examples drawn from the memory without
replacement (the "tiny episodic memories" ER recipe of Chaudhry et al. 2019, which avalanche's
Replay also follows), so each optimizer step mixes old and new data and the number of steps
per task is the same as for ``finetune``. After the task its examples are offered to the
reservoir. Every parameter is trained; the method works on any backbone whose examples can be
batched together across tasks (classic, CLIP, LLM).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset

from clbench.api import Backbone, ExampleListDataset, Experience, Strategy, StrategyConfig, TensorTaskDataset
from clbench.strategies.replay.buffer import ReservoirBuffer


@dataclass(frozen=True, kw_only=True)
class ReplayConfig(StrategyConfig):
    """Experience replay with a reservoir memory.

    Attributes:
        buffer_size: memory capacity in examples (avalanche's Replay default: 200).
        replay_batch_size: memory examples added to every training batch (0 = the batch size,
            so half of each step's examples are replayed once the memory is full enough).
        llm_lr: learning rate on LLM backbones when ``lr`` is not given (full fine-tuning).
    """

    buffer_size: int = 200
    replay_batch_size: int = 0
    llm_lr: float = 1e-5

    DEPARTURES = {
        "replay_batch_size": "as many memory examples as the batch size once the memory is full enough (ours); not measured",
    }

    def __post_init__(self) -> None:
        if self.buffer_size < 0 or self.replay_batch_size < 0:
            raise ValueError("buffer_size and replay_batch_size must be >= 0")

    def train_overrides(self, backbone_kind: str) -> dict[str, Any]:
        overrides = super().train_overrides(backbone_kind)
        if backbone_kind == "llm" and overrides["lr"] is None:
            overrides["lr"] = self.llm_lr
        return overrides


class ReplayMixDataset(Dataset[Any]):
    """The current task's examples, each fetched batch extended with random memory examples.

    The runner's DataLoader fetches a batch of indices at once (``__getitems__``); this adds
    ``replay_count`` memory examples drawn without replacement from ``generator``. Tensor data
    stays a batched dict; other data is a list of example dicts for the backbone's collate.
    """

    def __init__(self, current: Dataset[Any], memory: Dataset[Any], replay_count: int, generator: torch.Generator) -> None:
        self.current = current
        self.memory = memory
        self.replay_count = min(replay_count, len(memory))  # type: ignore[arg-type]
        self.generator = generator
        self.last_replayed = 0

    def __len__(self) -> int:
        return len(self.current)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> Any:
        return self.current[i]

    def _memory_indices(self) -> list[int]:
        if not self.replay_count:
            return []
        return torch.randperm(len(self.memory), generator=self.generator)[: self.replay_count].tolist()  # type: ignore[arg-type]

    def __getitems__(self, indices: Sequence[int]) -> Any:
        replay = self._memory_indices()
        self.last_replayed = len(replay)
        if isinstance(self.current, TensorTaskDataset) and isinstance(self.memory, TensorTaskDataset):
            now = self.current.__getitems__(indices)
            if not replay:
                return now
            old = self.memory.__getitems__(replay)
            return {k: torch.cat([now[k], old[k]]) for k in now}
        return [self.current[i] for i in indices] + [self.memory[i] for i in replay]


def gather_examples(experiences: Sequence[Experience], tasks: list[int], indices: list[int]) -> Dataset[Any]:
    """The referenced training examples as one dataset (a tensor store when all are tensors)."""
    by_index = {e.index: e for e in experiences}
    sources = [by_index[t].train for t in tasks]
    if sources and all(isinstance(s, TensorTaskDataset) for s in sources):
        memory = TensorTaskDataset.__new__(TensorTaskDataset)
        memory.x = torch.stack([s.x[i] for s, i in zip(sources, indices, strict=True)])  # type: ignore[attr-defined]
        memory.y = torch.stack([s.y[i] for s, i in zip(sources, indices, strict=True)])  # type: ignore[attr-defined]
        memory.task_ids = torch.stack([s.task_ids[i] for s, i in zip(sources, indices, strict=True)])  # type: ignore[attr-defined]
        return memory
    return ExampleListDataset([s[i] for s, i in zip(sources, indices, strict=True)])


class Replay(Strategy):
    """Fine-tune on the current task with every batch topped up from a reservoir memory."""

    Config = ReplayConfig
    config: ReplayConfig

    def setup(self, backbone: Backbone) -> None:
        super().setup(backbone)
        for p in backbone.model.parameters():
            p.requires_grad_(True)
        self.buffer = ReservoirBuffer(self.config.buffer_size)

    def _seed(self, task_index: int, purpose: int) -> int:
        return (self.ctx.seed * 1_000_003 + 7_919 * (task_index + 1) + 104_729 * purpose) % 2**63

    def memory(self) -> Dataset[Any]:
        """The buffered examples as a dataset."""
        return gather_examples(self.ctx.stream.experiences, self.buffer.tasks, self.buffer.indices)

    def training_data(self, experience: Experience, seen: Sequence[Experience]) -> Dataset[Any]:
        if not len(self.buffer):
            return experience.train
        count = self.config.replay_batch_size or self.ctx.train.batch_size
        generator = torch.Generator().manual_seed(self._seed(experience.index, 1))
        return ReplayMixDataset(experience.train, self.memory(), count, generator)

    def after_task(self, experience: Experience) -> None:
        generator = torch.Generator().manual_seed(self._seed(experience.index, 2))
        self.buffer.offer(experience.index, len(experience.train), generator)  # type: ignore[arg-type]

    def telemetry(self) -> dict[str, Any]:
        """Buffer fill, examples offered so far, and the buffer's task and class histograms."""
        per_task = Counter(self.buffer.tasks)
        names = {e.index: e.name for e in self.ctx.stream.experiences}
        out: dict[str, Any] = {"buffer_size": len(self.buffer), "buffer_seen": self.buffer.seen,
                               "buffer_tasks": {names[t]: per_task[t] for t in sorted(per_task)}}
        if len(self.buffer) and self.ctx.stream.class_names:
            memory = self.memory()
            labels = memory.y.tolist() if isinstance(memory, TensorTaskDataset) else [int(memory[i]["y"]) for i in range(len(memory))]  # type: ignore[arg-type]
            per_class: Counter[str] = Counter()
            for label in sorted(labels):  # tasks may share a class name: counts add up
                per_class[self.ctx.stream.class_names[label]] += 1
            out["buffer_classes"] = dict(per_class)
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"buffer": self.buffer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "buffer" in state:
            self.buffer.load_state_dict(state["buffer"])
