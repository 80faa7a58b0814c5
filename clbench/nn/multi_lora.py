"""Per-task LoRA: a frozen bank of past tasks' adapters plus the current task's adapter.

O-LoRA and InfLoRA give every task its own low-rank adapter and freeze it when the task ends.
Both keep the past adapters as a frozen bank (``A_old`` rows, ``B_old`` columns, concatenated
in task order) next to the current adapter (``A``, ``B``)::

    y = base(x) + s · (B_old A_old + B A) dropout(x)

with ``s = alpha / rank``. :meth:`TaskLoRALinear.consolidate_` appends the current adapter to the
bank and starts a fresh one, which leaves the layer's function unchanged. The bank is kept (not
merged into the base weight) because O-LoRA's penalty needs ``A_old`` and telemetry reports its
size; :meth:`TaskLoRALinear.delta_weight` gives the merged update when wanted.

The bank's buffers grow with every task, so resuming from a checkpoint must first give them
their saved shapes: :meth:`TaskLoRALinear.resize_bank_` (the checkpoint then fills the values).

``outputs=(start, stop)`` restricts the adapters to a slice of the layer's outputs, e.g. the key
and value rows of a fused ``qkv`` projection (InfLoRA adapts K and V, not Q).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from clbench.api.adapters import AdapterLinear, wrap_layers


class TaskLoRALinear(AdapterLinear):
    """A frozen linear layer with a frozen bank of past-task adapters and one current adapter.

    Args:
        base: the wrapped layer; its parameters are frozen.
        rank: rank r of each task's adapter (> 0).
        alpha: scaling numerator; every adapter (past and current) is scaled by ``alpha / rank``.
        dropout: dropout on the adapters' input (the base layer sees the clean input).
        outputs: ``(start, stop)``: adapt only these output features (``None`` = all of them).

    Attributes:
        lora_A: the current adapter's down-projection ``[r, d_in]`` (trainable unless frozen).
        lora_B: the current adapter's up-projection ``[d_adapted, r]`` (``d_adapted`` = the adapted
            outputs), zero at the start of a task.
        bank_A: past adapters' down-projections, ``[r · tasks, d_in]`` (buffer, no gradient).
        bank_B: past adapters' up-projections, ``[d_adapted, r · tasks]`` (buffer, no gradient).
    """

    bank_A: torch.Tensor
    bank_B: torch.Tensor

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0, outputs: tuple[int, int] | None = None) -> None:
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        start, stop = outputs if outputs is not None else (0, base.out_features)
        if not 0 <= start < stop <= base.out_features:
            raise ValueError(f"outputs must be a non-empty slice of [0, {base.out_features}), got {outputs}")
        super().__init__(base)  # holds the frozen layer as ``base``
        self.outputs = (int(start), int(stop))
        self.rank = rank
        self.scaling = alpha / rank
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, **factory))
        self.lora_B = nn.Parameter(torch.zeros(stop - start, rank, **factory))
        self.register_buffer("bank_A", torch.zeros(0, base.in_features, **factory))
        self.register_buffer("bank_B", torch.zeros(stop - start, 0, **factory))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.reset_adapter()

    @property
    def bank_rank(self) -> int:
        """Number of frozen rank-1 components (r times the consolidated tasks)."""
        return int(self.bank_A.shape[0])

    def reset_adapter(self) -> None:
        """Fresh current adapter: Kaiming-uniform A (a=√5, as LoRA and O-LoRA), zero B."""
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B)

    @torch.no_grad()
    def set_adapter_A_(self, a: torch.Tensor) -> None:
        """Overwrite the current down-projection (InfLoRA's designed ``A_t``)."""
        if a.shape != self.lora_A.shape:
            raise ValueError(f"A must have shape {tuple(self.lora_A.shape)}, got {tuple(a.shape)}")
        self.lora_A.copy_(a.to(self.lora_A.dtype))

    @torch.no_grad()
    def consolidate_(self) -> None:
        """Append the current adapter to the frozen bank and start a fresh one (same function)."""
        self.bank_A = torch.cat([self.bank_A, self.lora_A.detach().clone()], dim=0)
        self.bank_B = torch.cat([self.bank_B, self.lora_B.detach().clone()], dim=1)
        self.reset_adapter()

    def resize_bank_(self, bank_rank: int) -> None:
        """Give the bank ``bank_rank`` (zero) rows so a checkpoint's values can be loaded into it."""
        if bank_rank < 0:
            raise ValueError(f"bank rank must be >= 0, got {bank_rank}")
        factory = {"device": self.bank_A.device, "dtype": self.bank_A.dtype}
        self.bank_A = torch.zeros(bank_rank, self.in_features, **factory)
        self.bank_B = torch.zeros(self.lora_B.shape[0], bank_rank, **factory)

    def delta_weight(self, include_current: bool = True) -> torch.Tensor:
        """The adapters' weight update ``s · (B_old A_old + B A)`` (``d_out × d_in``, zero outside
        the adapted outputs)."""
        delta = self.bank_B @ self.bank_A
        if include_current:
            delta = delta + self.lora_B @ self.lora_A
        start, stop = self.outputs
        full = delta.new_zeros(self.out_features, self.in_features)
        full[start:stop] = delta
        return self.scaling * full

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dropped = self.dropout(x)
        update = (dropped @ self.lora_A.t()) @ self.lora_B.t()
        if self.bank_rank:
            update = update + (dropped @ self.bank_A.t()) @ self.bank_B.t()
        y = self.base(x)
        start, stop = self.outputs
        if (start, stop) == (0, self.out_features):
            return y + self.scaling * update
        return torch.cat([y[..., :start], y[..., start:stop] + self.scaling * update, y[..., stop:]], dim=-1)


def apply_task_lora(root: nn.Module, layers: dict[str, nn.Linear], rank: int, alpha: float, dropout: float = 0.0,
                    outputs: dict[str, tuple[int, int]] | None = None) -> dict[str, TaskLoRALinear]:
    """Wrap each named linear layer of ``root`` in a :class:`TaskLoRALinear`, in place.

    ``outputs`` optionally maps a layer name to the output slice its adapters act on.
    """
    return wrap_layers(root, layers, lambda name, layer: TaskLoRALinear(layer, rank, alpha, dropout, (outputs or {}).get(name)))
