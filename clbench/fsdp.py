"""Sharded training of causal LMs (``clbench run ... --nproc N --fsdp``): FSDP2 on the frozen base weights.

Adapter strategies train a few million parameters on top of a frozen model that may not fit one
device. Under ``--fsdp`` every rank still builds the whole model (from the same seed, as plain data
parallelism does), then :func:`shard_model` applies FSDP2 (``torch.distributed.fsdp.fully_shard``)
to each decoder layer and to the decoder holding them. Only *frozen* parameters are sharded: every
parameter that requires a gradient at that moment (the strategy's adapters, any trained head) is
passed as ``ignored_params`` and stays a plain replicated tensor whose gradient goes through
:func:`clbench.distributed.all_reduce_gradients`, exactly as in a plain data-parallel run. The
frozen weights become DTensors sharded on dim 0 (rank ``r`` keeps rows ``chunk(r)``); FSDP
all-gathers a layer's weights just before its forward (and again for its backward) and frees them
after, so a rank holds one layer's full weights at a time. The output head stays replicated (it is
often tied to the input embedding, which FSDP2 cannot split across two units).

Sharding happens once, right after ``strategy.setup``. FSDP2 keeps each sharded parameter on the
``nn.Linear`` that owns it, so a strategy may later wrap that layer in an adapter, unwrap it (CoDyRA,
every task) or grow adapters beside it (MoRA's bank): the layer object, and FSDP's hold on its
weight, stay the same; parameters created later are plain tensors FSDP never sees. A strategy that
writes into a frozen weight (a merge) must go through :func:`add_full_`, which adds each rank's rows
of the full-size update to its local shard.

Every forward of a sharded model is a collective, so all ranks must run the same forwards:
evaluation then scores the whole test set on every rank (:func:`clbench.training.evaluate`), and
under ``torch.no_grad`` rather than ``inference_mode`` (FSDP's all-gather buffers made under
inference mode could not be reused by training). Checkpoints gather the changed sharded tensors
(:func:`clbench.checkpoint.changed_state`; every rank takes part, rank 0 writes) and a resume copies
each rank's rows back (:func:`copy_full_`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.distributed.tensor import DTensor, distribute_tensor

__all__ = ["add_full_", "copy_full_", "full_tensor", "is_sharded", "local_parameter_bytes", "local_tensor", "shard_model", "sharded_parameters"]


def is_sharded(model: nn.Module) -> bool:
    """Whether FSDP sharded any parameter of ``model``."""
    return any(isinstance(p, DTensor) for p in model.parameters())


def local_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a DTensor, or the tensor itself."""
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor: a DTensor is all-gathered (every rank must call this for it), a plain tensor is returned as is."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def _like(target: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``value`` (full size, the same on every rank) laid out like ``target``: for a DTensor, this
    rank's rows of it, with no communication (every rank already holds the whole value)."""
    value = value.to(device=target.device, dtype=target.dtype)
    if not isinstance(target, DTensor):
        return value
    if tuple(value.shape) != tuple(target.shape):
        raise ValueError(f"a full-size value of shape {tuple(value.shape)} cannot go into a sharded tensor of shape {tuple(target.shape)}")
    return distribute_tensor(value, target.device_mesh, target.placements, src_data_rank=None)


@torch.no_grad()
def add_full_(target: torch.Tensor, delta: torch.Tensor) -> None:
    """``target += delta`` in place, ``delta`` being full size and the same on every rank; a sharded
    ``target`` adds its own rows only (what a merge into a frozen weight needs)."""
    target.add_(_like(target, delta))


@torch.no_grad()
def copy_full_(target: torch.Tensor, value: torch.Tensor) -> None:
    """``target[...] = value`` in place, ``value`` being full size and the same on every rank (a
    checkpoint's tensor loaded into a sharded model)."""
    target.copy_(_like(target, value))


def sharded_parameters(model: nn.Module) -> list[tuple[str, DTensor]]:
    """The sharded parameters of ``model`` by name."""
    return [(name, p) for name, p in model.named_parameters() if isinstance(p, DTensor)]


def local_parameter_bytes(model: nn.Module) -> int:
    """Bytes of the parameters this rank holds (a sharded parameter counts its local shard only)."""
    return sum(local_tensor(p).numel() * p.element_size() for p in model.parameters())


def shard_model(root: nn.Module, layers: Iterable[nn.Module], keep: Iterable[nn.Parameter], mesh: Any = None) -> int:
    """Shard the frozen weights of ``layers`` (one FSDP unit each) and then of ``root``'s other
    modules (one unit), leaving ``keep`` and every parameter that requires a gradient unsharded.

    ``root`` must be the module whose forward runs the layers (a causal LM's decoder), so FSDP's
    root hooks run on every forward. Layers are resharded after their forward (only one layer's
    full weights live at a time, in training and evaluation alike).

    Returns:
        How many parameters were sharded.
    """
    from torch.distributed.fsdp import fully_shard

    ignored = set(keep) | {p for p in root.parameters() if p.requires_grad}
    for layer in layers:
        fully_shard(layer, mesh=mesh, reshard_after_forward=True, ignored_params=ignored)
    fully_shard(root, mesh=mesh, reshard_after_forward=True, ignored_params=ignored)
    return len(sharded_parameters(root))
