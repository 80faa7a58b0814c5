"""LoRA: a frozen linear layer plus a trainable low-rank update, with exact merge and reset.

``y = base(x) + s · B A dropout(x)`` with ``A`` (r × d_in, Kaiming-uniform, a=√5, as in the LoRA
paper and peft) and ``B`` (d_out × r, zeros), scaling ``s = alpha / r``. The wrapper keeps the
original layer as ``base`` so merging writes ``s·B A`` into ``base.weight`` and leaves a plain
``nn.Linear`` behind when :func:`unwrap_lora` is called.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from clbench.api.adapters import AdapterLinear, replace_submodule, wrap_layers


class LoRALinear(AdapterLinear):
    """A linear layer with a low-rank adapter.

    Args:
        base: the wrapped layer; its parameters are frozen.
        rank: adapter rank r (> 0).
        alpha: scaling numerator; the update is scaled by ``alpha / rank``.
        dropout: dropout on the adapter's input.
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0) -> None:
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        super().__init__(base)  # holds the frozen layer as ``base``
        self.rank = rank
        self.scaling = alpha / rank
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, device=base.weight.device, dtype=base.weight.dtype))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, device=base.weight.device, dtype=base.weight.dtype))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.reset_adapter()

    def reset_adapter(self) -> None:
        """Fresh adapter: Kaiming-uniform A, zero B (so the layer equals its base again)."""
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B)

    def delta_weight(self) -> torch.Tensor:
        """The adapter's weight update ``s · B A`` (d_out × d_in)."""
        return self.scaling * (self.lora_B @ self.lora_A)

    @torch.no_grad()
    def merge_(self) -> None:
        """Add the update into the base weight and reset the adapter (output unchanged)."""
        self.add_to_base_weight_(self.delta_weight())
        self.reset_adapter()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = (self.dropout(x) @ self.lora_A.t()) @ self.lora_B.t()
        return self.base(x) + self.scaling * update


def apply_lora(root: nn.Module, layers: dict[str, nn.Linear], rank: int, alpha: float, dropout: float = 0.0) -> dict[str, LoRALinear]:
    """Wrap each named linear layer of ``root`` in a :class:`LoRALinear`, in place."""
    return wrap_layers(root, layers, lambda _, layer: LoRALinear(layer, rank, alpha, dropout))


def unwrap_lora(root: nn.Module) -> int:
    """Merge every adapter of ``root`` and put the plain base layers back; returns how many."""
    names = [n for n, m in root.named_modules() if isinstance(m, LoRALinear)]
    for name in names:
        lora = root.get_submodule(name)
        assert isinstance(lora, LoRALinear)
        lora.merge_()
        replace_submodule(root, name, lora.base)
    return len(names)
