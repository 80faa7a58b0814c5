"""Small classic models for fast benchmarks: an MLP over flat tensor inputs.

Spec: ``mlp`` (one hidden layer of 128), ``mlp:256`` or ``mlp:256,128`` (hidden widths).

Protocols: a single classifier covers the benchmark's global label space. Task-incremental
benchmarks mask the logits of each example to its own task's classes (a multi-head classifier
without separate modules, so joint and replay batches may mix tasks); class- and
domain-incremental benchmarks score against every class.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from clbench.api.adapters import HIDDEN_LAYER_PLACEMENTS
from clbench.api.backbone import Backbone, Batch
from clbench.api.stream import Experience, Stream
from clbench.errors import UsageError


class MLP(nn.Module):
    """Fully connected ReLU network: ``fc1 .. fcN`` hidden layers and a ``head`` (built by bind)."""

    def __init__(self, in_features: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.in_features = in_features
        self.hidden = hidden
        widths = (in_features, *hidden)
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True), start=1):
            self.add_module(f"fc{i}", nn.Linear(a, b))
        self.head: nn.Linear | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(1)
        for i in range(1, len(self.hidden) + 1):
            h = F.relu(getattr(self, f"fc{i}")(h))
        if self.head is None:
            raise RuntimeError("MLP head not built: bind the backbone to a stream first")
        return self.head(h)


class ClassicBackbone(Backbone):
    """A classifier over tensors with protocol-aware label masking."""

    kind = "classic"
    target_patterns = {"fc": ("fc*",), "head": ("head",)}
    adapter_placements = HIDDEN_LAYER_PLACEMENTS
    heads_untrained = True

    def __init__(self, spec: str, hidden: tuple[int, ...]) -> None:
        super().__init__(spec, nn.Module())
        self.hidden = hidden
        self.label_masks: torch.Tensor | None = None

    def bind(self, stream: Stream) -> None:
        super().bind(stream)
        if stream.input_shape is None or not stream.num_classes:
            raise UsageError(f"backbone {self.spec!r} needs a classification stream over tensors")
        self.model = MLP(math.prod(stream.input_shape), self.hidden)
        self.model.head = nn.Linear(self.hidden[-1], stream.num_classes)
        self.label_masks = stream.label_masks()
        self.model.to(self.device)

    def to(self, device: torch.device) -> ClassicBackbone:
        super().to(device)
        if self.label_masks is not None:
            self.label_masks = self.label_masks.to(device)
        return self

    def outputs(self, batch: Batch) -> torch.Tensor:
        """Logits with other tasks' classes masked to -inf under the task-incremental protocol."""
        logits = self.model(batch["x"])
        assert self.label_masks is not None
        if self.stream is not None and self.stream.protocol == "task-incremental":
            logits = logits.masked_fill(~self.label_masks[batch["task_id"]], float("-inf"))
        return logits

    def loss(self, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(self.outputs(batch), batch["y"])

    def score(self, batch: Batch, experience: Experience) -> torch.Tensor:
        return (self.outputs(batch).argmax(dim=1) == batch["y"]).float()


def build_mlp(spec: str) -> ClassicBackbone:
    """Build the MLP backbone from ``mlp[:W1[,W2...]]``."""
    _, _, rest = spec.partition(":")
    try:
        hidden = tuple(int(w) for w in rest.split(",")) if rest else (128,)
    except ValueError:
        raise UsageError(f"bad MLP spec {spec!r}: expected mlp or mlp:W1[,W2...] with integer widths") from None
    if not hidden or any(w < 1 for w in hidden):
        raise UsageError(f"bad MLP spec {spec!r}: widths must be positive integers")
    return ClassicBackbone(spec, hidden)
