"""SaRA's sparse update: a trainable vector of the selected entries, written into a frozen weight.

For a parameter tensor ``W`` and the selection ``M = |W| < θ``, :class:`SparseUpdate` is a
:mod:`torch.nn.utils.parametrize` parametrization holding ``values = W[M]`` as its only
trainable parameter. The layer's forward reads ``W`` with the selected entries replaced by
``values`` and is otherwise unchanged, so inference costs nothing and there is nothing to merge.
Autograd's backward of the write hands ``grad_W[M]`` to ``values``: the full weight gradient exists
only transiently, while the persistent ``.grad`` and the optimizer's moments are ``|M|``-sized
(the official "unstructural backprop" op, ``sjtuplayer/SaRA`` ``optim/adamw.py``).

Entries are addressed by flat int64 indices (8 bytes each) or by a flat bool mask (1 byte per
weight), whichever is smaller for the layer. The write is out of place by default (one weight copy
per forward); ``inplace=True`` writes into the weight's storage like the official op.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize


class _WriteSelected(torch.autograd.Function):
    """In-place write of ``values`` into ``storage`` at ``index``; backward gathers the gradient."""

    @staticmethod
    def forward(ctx: object, storage: torch.Tensor, values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        storage.view(-1)[index] = values.to(storage.dtype)
        ctx.save_for_backward(index)  # type: ignore[attr-defined]
        return storage.view_as(storage)

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> tuple[None, torch.Tensor, None]:  # type: ignore[override]
        (index,) = ctx.saved_tensors  # type: ignore[attr-defined]
        return None, grad.reshape(-1)[index], None


class SparseUpdate(nn.Module):
    """Parametrization ``W ↦ W`` with the selected entries replaced by the trainable ``values``.

    Args:
        weight: the tensor being parametrized (its current values seed ``values``).
        mask: bool tensor of ``weight``'s shape: the selected entries.
        inplace: write into the weight's storage instead of an out-of-place copy.
    """

    def __init__(self, weight: torch.Tensor, mask: torch.Tensor, inplace: bool = False) -> None:
        super().__init__()
        flat = mask.reshape(-1).to(device=weight.device)
        count = int(flat.sum())
        self.numel = weight.numel()
        self.inplace = inplace
        self.use_abs = False  # the official code's first forward after (re)selection reads |w|
        if inplace or 8 * count < flat.numel():
            self.register_buffer("index", flat.nonzero().squeeze(1), persistent=False)
            self.register_buffer("mask", None, persistent=False)
        else:
            self.register_buffer("index", None, persistent=False)
            self.register_buffer("mask", flat, persistent=False)
        self.values = nn.Parameter(self.gather(weight.detach()))

    @property
    def count(self) -> int:
        """|M|, the number of trainable entries."""
        return int(self.values.numel())

    def selection_bytes(self) -> int:
        """Bytes of the stored selection (indices or mask)."""
        held = self.index if self.index is not None else self.mask
        return held.numel() * held.element_size()

    def selected_mask(self) -> torch.Tensor:
        """The selection as a flat bool mask."""
        if self.mask is not None:
            return self.mask
        out = torch.zeros(self.numel, dtype=torch.bool, device=self.index.device)
        out[self.index] = True
        return out

    def gather(self, weight: torch.Tensor) -> torch.Tensor:
        """``weight[M]`` as a flat vector, in flat (row-major) order."""
        flat = weight.reshape(-1)
        return (flat[self.index] if self.index is not None else flat[self.mask]).clone()

    def write(self, weight: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """``weight`` with the selected entries replaced by ``values`` (out of place)."""
        flat = weight.reshape(-1)
        if self.index is not None:
            return flat.index_put((self.index,), values.to(flat.dtype)).view_as(weight)
        return flat.masked_scatter(self.mask, values.to(flat.dtype)).view_as(weight)

    def forward(self, original: torch.Tensor) -> torch.Tensor:
        values = self.values.abs() if self.use_abs else self.values
        if self.inplace:
            return _WriteSelected.apply(original.detach(), values, self.index)
        return self.write(original.detach(), values)

    @torch.no_grad()
    def reselect_(self, weight: torch.Tensor, keep: torch.Tensor) -> int:
        """Shrink the selection to ``M ∧ keep`` (``keep``: flat bool over the weight), in place.

        The ``values`` Parameter object is kept: the surviving entries are swapped into it with
        :func:`torch.utils.swap_tensors` (which also gives it fresh autograd metadata for the new
        shape), so optimizers and parameter lists that hold it stay valid; its optimizer state
        must be reset by the caller. Returns how many entries left the selection.
        """
        old = self.selected_mask()
        new = old & keep.reshape(-1).to(old.device)
        dropped = int(old.sum()) - int(new.sum())
        if self.index is not None:
            self.index = new.nonzero().squeeze(1)
        else:
            self.mask = new
        torch.utils.swap_tensors(self.values, nn.Parameter(self.gather(weight)))
        return dropped


@dataclass
class SparseSlot:
    """One parametrized tensor: the module owning it, the attribute name and its parametrization."""

    name: str
    module: nn.Module
    attr: str
    update: SparseUpdate

    @property
    def original(self) -> torch.Tensor:
        """The frozen weight tensor under the parametrization (holds the last committed values)."""
        return getattr(self.module.parametrizations, self.attr).original

    def current(self) -> torch.Tensor:
        """The effective weight (selected entries from ``values``), detached."""
        with torch.no_grad():
            return self.update.write(self.original.detach(), self.update.values.detach())


def attach(name: str, module: nn.Module, attr: str, mask: torch.Tensor, inplace: bool = False) -> SparseSlot:
    """Parametrize ``module.<attr>`` with a :class:`SparseUpdate` over ``mask``."""
    update = SparseUpdate(getattr(module, attr), mask, inplace=inplace)
    parametrize.register_parametrization(module, attr, update, unsafe=True)
    return SparseSlot(name, module, attr, update)


@torch.no_grad()
def detach_slot(slot: SparseSlot) -> None:
    """Write the trained entries into the weight and remove the parametrization (plain tensor again).

    The original ``nn.Parameter`` object is put back, so tied or shared references keep working.
    """
    final = slot.current()
    parametrize.remove_parametrizations(slot.module, slot.attr, leave_parametrized=False)
    getattr(slot.module, slot.attr).copy_(final)


def selection_threshold(weights: list[torch.Tensor], budget: float) -> float:
    """Global θ such that ``|w| < θ`` selects ``budget`` entries over all ``weights``.

    ``budget`` is a count (>= 1) or a fraction (< 1) of the entries. θ is the (k+1)-th smallest
    |w|, so exactly k entries fall strictly below it when there are no ties at the boundary; ties
    at the (k+1)-th value select fewer (the rule ``|w| < θ`` is strict, as in the code).
    """
    total = sum(w.numel() for w in weights)
    k = int(budget) if budget >= 1 else int(round(budget * total))
    if k <= 0:
        return 0.0
    flat = torch.cat([w.detach().abs().reshape(-1).float().cpu() for w in weights])
    if k >= total:
        return math.nextafter(float(flat.max()), math.inf)
    return float(torch.kthvalue(flat, k + 1).values)


def nuclear_gradient(matrix: torch.Tensor, tol: float = 1e-12) -> torch.Tensor:
    """A (sub)gradient of ``‖X‖_*``: ``U Vᵀ`` over the nonzero singular values (zero directions get 0)."""
    u, s, vh = torch.linalg.svd(matrix.double(), full_matrices=False)
    keep = s > tol * max(float(s.max()) if s.numel() else 0.0, 1e-300)
    return (u[:, keep] @ vh[keep]).to(matrix.dtype)


def official_lr(threshold: float) -> float:
    """The official learning-rate rule when none is given: ``1e-3 · exp(−350 θ)`` (≈ 4.97e-4 at θ = 2e-3)."""
    return 1e-3 * math.exp(-350.0 * threshold)
