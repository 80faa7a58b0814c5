"""Adapter injection, shared by every adapter strategy (and the plugin template).

Where adapters go is a fact of the backbone, not of the strategy. A strategy names a *placement*
(the layers its paper adapts, in words that hold for every architecture); each backbone says which
of its generic targets that placement means (:attr:`clbench.api.Backbone.adapter_placements`):

=================  ==============================  =========  ==================  ===========
placement          meaning                         classic    vit                 clip / llm
=================  ==============================  =========  ==================  ===========
``attention-qv``   query and value projections     fc         qkv                 q, v
``attention-kv``   key and value projections       fc         qkv                 k, v
``attention``      q, k, v and output projections  fc         qkv, o              q, k, v, o
``attention-out``  the attention output            fc         o                   o
``all-linear``     every block linear layer        fc         qkv, o, fc, proj    q, k, v, o, fc, proj
=================  ==============================  =========  ==================  ===========

:func:`inject_adapters` then does the set-up every adapter strategy shares: freeze the model, wrap
each target linear layer with the strategy's layer factory, and train the heads the backbone
declares untrained (:meth:`clbench.api.Backbone.heads_to_train`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

import torch
from torch import nn

if TYPE_CHECKING:
    from clbench.api.backbone import Backbone

QV = "attention-qv"
KV = "attention-kv"
ATTENTION = "attention"
ATTENTION_OUT = "attention-out"
ALL_LINEAR = "all-linear"
PLACEMENTS = (QV, KV, ATTENTION, ATTENTION_OUT, ALL_LINEAR)
"""Every placement name a backbone may map (see the module docstring)."""

TRANSFORMER_PLACEMENTS: dict[str, tuple[str, ...]] = {
    QV: ("q", "v"), KV: ("k", "v"), ATTENTION: ("q", "k", "v", "o"), ATTENTION_OUT: ("o",),
    ALL_LINEAR: ("q", "k", "v", "o", "fc", "proj"),
}
"""Placements on a transformer with separate q, k, v, o, fc and proj linears (CLIP as split by
clbench, Llama-style causal LMs, T5/BART seq2seq models)."""

HIDDEN_LAYER_PLACEMENTS: dict[str, tuple[str, ...]] = dict.fromkeys(PLACEMENTS, ("fc",))
"""Every placement on a classifier whose adaptable layers are its hidden ``fc`` layers (the MLP,
the sentence-encoder classifier, whose ``fc`` are the encoder's intermediate layers)."""

M = TypeVar("M", bound=nn.Module)


def replace_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    """Put ``module`` at the dotted path ``name`` inside ``root`` (how adapters wrap and unwrap layers)."""
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)


def wrap_layers(root: nn.Module, layers: dict[str, nn.Linear], factory: Callable[[str, nn.Linear], M]) -> dict[str, M]:
    """Replace each named layer of ``root`` by ``factory(name, layer)``, in the order of ``layers``.

    The order matters: factories that draw initial values from torch's global generator draw
    them layer by layer in this order.
    """
    wrapped: dict[str, M] = {}
    for name, layer in layers.items():
        adapter = factory(name, layer)
        replace_submodule(root, name, adapter)
        wrapped[name] = adapter
    return wrapped


def placement_targets(backbone: Backbone, configured: Sequence[str], placement: str, strategy: str) -> tuple[str, ...]:
    """The targets a strategy adapts: the ``configured`` ones (``-S targets=``; they must exist),
    else what ``placement`` means on this backbone (:meth:`Backbone.default_targets` drops the
    ones it lacks and falls back to the backbone's own fallback targets)."""
    if configured:
        return tuple(configured)
    return backbone.default_targets(backbone.placement_targets(placement), strategy)


def freeze(model: nn.Module) -> None:
    """Stop gradients to every parameter of ``model``."""
    for p in model.parameters():
        p.requires_grad_(False)


class AdapterLinear(nn.Module):
    """Base of the adapter layers that wrap a frozen linear layer: it holds the layer as ``base``
    (so state-dict keys read ``base.weight``) with its parameters frozen, and reports its sizes.

    Subclasses check their own arguments first and then call ``super().__init__(base)``, so a
    rejected construction leaves the wrapped layer as it was.
    """

    def __init__(self, base: nn.Linear) -> None:
        super().__init__()
        self.base = base
        freeze(base)

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def add_to_base_weight_(self, delta: torch.Tensor) -> None:
        """Add the full-size update ``delta`` into the frozen base weight (a merge), cast to its dtype.

        Merges go through here so that they also work on a weight ``--fsdp`` sharded: each rank
        then adds its own rows of ``delta`` to its shard (:func:`clbench.fsdp.add_full_`).
        """
        from clbench.fsdp import add_full_  # torch.distributed.tensor, only when a merge happens

        add_full_(self.base.weight, delta.detach())


def unfreeze(model: nn.Module) -> None:
    """Let every parameter of ``model`` train (strategies that train the backbone's own weights)."""
    for p in model.parameters():
        p.requires_grad_(True)


def train_heads(backbone: Backbone, adapted: Sequence[str] | dict[str, nn.Module]) -> dict[str, nn.Linear]:
    """Make the backbone's untrained heads trainable, except heads an adapter wraps; returns them."""
    heads = backbone.heads_to_train(adapted)
    for head in heads.values():
        head.requires_grad_(True)
    return heads


def inject_adapters(backbone: Backbone, targets: Sequence[str], factory: Callable[[str, nn.Linear], M], *,
                    heads: bool) -> dict[str, M]:
    """Freeze the backbone's model, wrap the linear layers ``targets`` match with ``factory``, train its heads.

    Args:
        backbone: the backbone whose model is changed in place.
        targets: generic target names or module-name globs (:meth:`Backbone.adapter_targets`).
        factory: ``(qualified name, linear layer) -> adapter module`` replacing that layer.
        heads: also train the heads the backbone declares untrained (a strategy's ``train_head``).

    Returns:
        The adapters by qualified layer name, sorted by name.

    Raises:
        UsageError: a target that matches no linear layer.
    """
    freeze(backbone.model)
    layers = backbone.adapter_targets(targets)
    adapters = wrap_layers(backbone.model, layers, factory)
    if heads:
        train_heads(backbone, layers)
    return adapters
