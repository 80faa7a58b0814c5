"""MoRA / MoRAM: a frozen linear layer plus a growing bank of self-activated rank-1 experts.

Each adapted linear keeps rank-1 atoms ``B_i A_iᵀ``: the frozen atoms of past tasks (``bank_A``,
``bank_B``) and ``r`` trainable atoms of the current task (``lora_A`` Kaiming-uniform, ``lora_B``
zero). Per token (MoRAM, arXiv 2506.21035, eqs. 4–8)::

    z = A_all · dropout(x)                      responses of all R atoms (old ones too)
    s = z / max(‖z‖₂, eps)                      signed, L2-normalised scores (no router)
    w = softmax(TopK_k(s) / τ)                  k = max(topk, 2), clamped to R
    w ← w · 1[s ≥ δ]     (eval mode, δ > 0)     no renormalisation afterwards
    y = W x + b + B_all (w ⊙ z)                 B_all = [B_bank, s_lora · B_new]

The computation goes through :func:`clbench.kernels.rank_gated_lora` with a
:class:`~clbench.kernels.TopKSoftmaxGate`, so every path of that operation (reference, CPU,
Triton) serves MoRA. At a task boundary :meth:`MoRALinear.freeze_current_` appends the current
atoms to the bank and starts fresh ones; nothing is merged into ``W`` because the weights of the
experts depend on the input.

**LLM scaling quirk** (``Artificer-AI-Lab/MoRAM`` ``TRACE/utils/my_peft/tuners/moram.py``). The official LLM code scales the trainable values by
``s = lora_alpha / r`` during training but copies ``B_new`` into the bank *without* ``s``, so a
task's atoms lose part of their magnitude once frozen (with the LLM runner's s = 2, half). That is
a bug of the released code, not the method (a frozen expert is meant to keep what it learned), and
it costs both retention and the next task's learning (``docs/strategies/mora.md``, isolation study).
``bake_scaling_on_freeze=True`` (the default) stores ``s · B_new`` in the bank, so the function the
task was trained with is kept exactly; ``False`` reproduces the released code. With ``s = 1``
(CLIP) both agree.
"""

from __future__ import annotations

import math
import torch
from torch import nn
from torch.nn import functional as F

from clbench.api.adapters import AdapterLinear, replace_submodule, wrap_layers
from clbench.kernels import TopKSoftmaxGate, rank_gated_lora
from clbench.kernels.reference import gate_values
from clbench.strategies.mora.config import MoRASettings

__all__ = ["MoRALinear", "MoRASettings", "apply_mora", "unwrap_mora"]


class MoRALinear(AdapterLinear):
    """A frozen linear layer with a bank of self-activated rank-1 experts.

    Args:
        base: the wrapped layer; its parameters are frozen.
        settings: the layer's hyperparameters.

    Attributes:
        lora_A: trainable keys of the current task, ``[r, d_in]``.
        lora_B: trainable values of the current task, ``[d_out, r]``.
        bank_A: frozen keys of past tasks, ``[R_old, d_in]`` (a buffer: saved, never trained).
        bank_B: frozen values of past tasks, ``[d_out, R_old]``.
    """

    bank_A: torch.Tensor
    bank_B: torch.Tensor

    def __init__(self, base: nn.Linear, settings: MoRASettings) -> None:
        super().__init__(base)  # holds the frozen layer as ``base``
        self.settings = settings
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_A = nn.Parameter(torch.empty(settings.rank, base.in_features, **factory))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, settings.rank, **factory))
        self.register_buffer("bank_A", torch.zeros(0, base.in_features, **factory))
        self.register_buffer("bank_B", torch.zeros(base.out_features, 0, **factory))
        self.dropout = nn.Dropout(settings.dropout) if settings.dropout > 0 else nn.Identity()
        # Routing statistics (evaluation telemetry), off unless start_usage() was called.
        self._usage: torch.Tensor | None = None
        self._tokens = 0
        # Training telemetry, off unless start_fresh_routing() was called: [tokens whose top-k
        # holds a current-task atom, tokens seen].
        self._fresh: list[int] | None = None
        self.reset_current()

    @property
    def frozen_atoms(self) -> int:
        """Atoms in the frozen bank (``R_old``)."""
        return self.bank_A.shape[0]

    @property
    def total_atoms(self) -> int:
        """Atoms taking part in routing (``R = R_old + r``)."""
        return self.frozen_atoms + self.settings.rank

    def atom_parameters(self) -> int:
        """Numbers held by the atoms (frozen and trainable): ``R · (d_in + d_out)``."""
        return self.total_atoms * (self.in_features + self.out_features)

    @torch.no_grad()
    def reset_current(self) -> None:
        """Fresh current-task atoms: Kaiming-uniform keys (a=√5), zero values."""
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B)

    @torch.no_grad()
    def freeze_current_(self) -> None:
        """Task boundary: append the current atoms to the frozen bank, then start fresh ones."""
        values = self.lora_B.detach()
        if self.settings.bake_scaling_on_freeze:
            values = values * self.settings.scaling
        self.bank_A = torch.cat([self.bank_A, self.lora_A.detach().clone()], dim=0)
        self.bank_B = torch.cat([self.bank_B, values.clone()], dim=1)
        self.reset_current()

    def resize_bank_(self, atoms: int) -> None:
        """Give the bank room for ``atoms`` frozen atoms (zeros), e.g. before loading a checkpoint."""
        factory = {"device": self.bank_A.device, "dtype": self.bank_A.dtype}
        self.bank_A = torch.zeros(atoms, self.in_features, **factory)
        self.bank_B = torch.zeros(self.out_features, atoms, **factory)

    def gate(self) -> TopKSoftmaxGate:
        """The routing rule for the current mode: δ only in eval mode and only when positive."""
        s = self.settings
        threshold = s.threshold if (not self.training and s.threshold > 0) else None
        return TopKSoftmaxGate(k=min(s.k, self.total_atoms), temperature=s.temperature, threshold=threshold, eps=s.norm_eps)

    # ---- routing statistics ----------------------------------------------------------------
    def start_usage(self) -> None:
        """Start counting, per atom, the tokens whose gate is nonzero (after δ in eval mode)."""
        self._usage = torch.zeros(self.total_atoms, device=self.lora_A.device, dtype=torch.float64)
        self._tokens = 0

    def stop_usage(self) -> tuple[torch.Tensor, int]:
        """Stop counting; returns the per-atom counts (``[R]``, on the layer's device) and tokens seen."""
        usage = self._usage if self._usage is not None else torch.zeros(self.total_atoms, dtype=torch.float64)
        tokens = self._tokens
        self._usage, self._tokens = None, 0
        return usage, tokens

    def start_fresh_routing(self) -> None:
        """Start counting training tokens whose top-k selects at least one current-task atom.

        Those are the only tokens that give the current atoms a gradient: a task whose count stays
        0 cannot learn (its fresh atoms never enter any token's top-k).
        """
        self._fresh = [0, 0]

    def stop_fresh_routing(self) -> tuple[int, int]:
        """Stop counting; returns (tokens routed to a current-task atom, training tokens seen)."""
        counts = self._fresh or [0, 0]
        self._fresh = None
        return counts[0], counts[1]

    @torch.no_grad()
    def _count_fresh(self, x: torch.Tensor) -> None:
        """Add this batch's tokens to the fresh-routing counts (the training gate: top-k, no δ)."""
        assert self._fresh is not None
        x2 = x.reshape(-1, x.shape[-1])
        a_all = torch.cat([self.bank_A, self.lora_A.detach()], dim=0).to(x2.dtype)
        gate = gate_values(x2 @ a_all.t(), self.gate())
        self._fresh[0] += int((gate[:, self.frozen_atoms:] != 0).any(dim=1).sum())
        self._fresh[1] += x2.shape[0]

    # ---- forward -------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        usage = self._usage
        if usage is not None:
            if usage.shape[0] != self.total_atoms:  # the bank grew while counting
                raise RuntimeError("MoRA usage counting spans a task boundary; call stop_usage() first")
            self._tokens += x.numel() // x.shape[-1]
        frozen_a = self.bank_A if self.frozen_atoms else None
        frozen_b = self.bank_B if self.frozen_atoms else None
        dropping = self.training and self.settings.dropout > 0
        adapter_input = self.dropout(x) if dropping else x
        if self.training and self._fresh is not None:
            self._count_fresh(adapter_input)
        out = rank_gated_lora(adapter_input, self.base.weight, self.base.bias, frozen_a, frozen_b, self.lora_A, self.lora_B, self.gate(),
                              train_scale=self.settings.scaling, usage=usage)
        if dropping:
            # The operation feeds one input to the base layer and the atoms; with adapter dropout
            # the base must still see the clean x, so add W (x - dropout(x)) back.
            out = out + F.linear(x - adapter_input, self.base.weight)
        return out


def apply_mora(root: nn.Module, layers: dict[str, nn.Linear], settings: MoRASettings) -> dict[str, MoRALinear]:
    """Wrap each named linear layer of ``root`` in a :class:`MoRALinear`, in place."""
    return wrap_layers(root, layers, lambda _, layer: MoRALinear(layer, settings))


def unwrap_mora(root: nn.Module) -> int:
    """Put the plain base layers back (dropping every atom); returns how many layers were unwrapped.

    MoRA's update depends on the input, so it cannot be merged into the weights: unwrapping gives
    back the original function of the backbone.
    """
    names = [n for n, m in root.named_modules() if isinstance(m, MoRALinear)]
    for name in names:
        mora = root.get_submodule(name)
        assert isinstance(mora, MoRALinear)
        replace_submodule(root, name, mora.base)
    return len(names)
