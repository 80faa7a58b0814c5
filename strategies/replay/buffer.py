"""A reservoir-sampled replay memory over the examples of a stream (Vitter's algorithm R).

The buffer holds *references* ``(task index, example index)`` to examples of the benchmark's
stream rather than copies: streams are rebuilt identically on resume, so a checkpoint of the
buffer is two small integer tensors, and the examples themselves are fetched when training.

After ``n`` examples have been offered, every one of them is in the buffer with probability
``min(1, size / n)``, whatever the order they came in, so the memory stays a uniform sample of
the whole stream seen so far.
"""

from __future__ import annotations

import torch


class ReservoirBuffer:
    """A fixed-capacity uniform sample of every example offered so far.

    Attributes:
        capacity: the buffer size in examples.
        seen: how many examples have been offered.
        tasks, indices: the stored references (parallel lists).
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError(f"buffer capacity must be >= 0, got {capacity}")
        self.capacity = capacity
        self.seen = 0
        self.tasks: list[int] = []
        self.indices: list[int] = []

    def __len__(self) -> int:
        return len(self.indices)

    def offer(self, task: int, count: int, generator: torch.Generator) -> None:
        """Offer examples ``0 .. count-1`` of ``task`` one by one (reservoir sampling).

        Example ``n`` of the stream (0-based, over all tasks) fills a free slot while the buffer
        is not full; afterwards it replaces slot ``j ~ U{0..n}`` when ``j < capacity``.
        """
        if self.capacity == 0 or count == 0:
            self.seen += count
            return
        # One uniform draw per example, all at once: slot j = floor(u * (n + 1)) ~ U{0..n}.
        draws = torch.rand(count, generator=generator, dtype=torch.float64).tolist()
        for i, u in enumerate(draws):
            n = self.seen + i
            if len(self.indices) < self.capacity:
                self.tasks.append(task)
                self.indices.append(i)
                continue
            slot = min(int(u * (n + 1)), n)
            if slot < self.capacity:
                self.tasks[slot] = task
                self.indices[slot] = i
        self.seen += count

    def state_dict(self) -> dict[str, torch.Tensor | int]:
        return {"capacity": self.capacity, "seen": self.seen, "tasks": torch.tensor(self.tasks, dtype=torch.long),
                "indices": torch.tensor(self.indices, dtype=torch.long)}

    def load_state_dict(self, state: dict[str, torch.Tensor | int]) -> None:
        if int(state["capacity"]) != self.capacity:
            raise ValueError(f"checkpointed buffer holds {state['capacity']} slots, config asks for {self.capacity}")
        self.seen = int(state["seen"])
        self.tasks = [int(t) for t in state["tasks"]]  # type: ignore[union-attr]
        self.indices = [int(i) for i in state["indices"]]  # type: ignore[union-attr]
