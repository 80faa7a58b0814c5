"""The backbone interface: a pretrained (or freshly initialised) model behind one contract.

A backbone knows how to turn examples into a batch, how to compute the training loss for a
batch, how to score a batch for evaluation, and which linear layers adapters may wrap (by
generic target names such as ``q``, ``k``, ``v``, ``o``, ``fc``, ``proj``, ``head``). Strategies
and the runner talk to models only through this interface, so one strategy serves classic
models, CLIP and LLMs.
"""

from __future__ import annotations

import fnmatch
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterator, Sequence
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, default_collate

from clbench.api.stream import Experience, Stream
from clbench.errors import UsageError

Batch = dict[str, Any]


class Backbone(ABC):
    """Base class for backbones.

    Subclasses set :attr:`kind`, build :attr:`model` and map generic adapter target names to
    module-name patterns in :attr:`target_patterns`.

    Attributes:
        kind: ``classic``, ``llm`` or ``clip``; strategies declare which kinds they support.
        spec: the spec string the backbone was built from (recorded in results).
        model: the ``nn.Module`` holding every parameter (strategies wrap its layers in place).
        target_patterns: generic target name -> glob patterns over ``model.named_modules()``.
    """

    kind: ClassVar[str] = ""
    target_patterns: ClassVar[dict[str, tuple[str, ...]]] = {}
    adapter_placements: ClassVar[dict[str, tuple[str, ...]]] = {}
    """What each adapter placement (:mod:`clbench.api.adapters`: ``attention-qv``, ``all-linear``,
    ...) means on this backbone, in generic target names; a backbone without the table adapts every
    target but ``head`` for any placement."""
    heads_untrained: ClassVar[bool] = False
    """Its ``head`` layers start random (classic, ViT, encoder classifiers), so adapter strategies
    train them fully (their ``train_head``); pretrained heads (CLIP's text towers, LM heads) stay frozen."""
    fallback_targets: tuple[str, ...] = ()
    """Targets adapter strategies use when none of their per-kind default targets exists on this
    backbone (a frozen sentence encoder keeps only its ``head``); empty: such a default fails."""

    def __init__(self, spec: str, model: nn.Module) -> None:
        self.spec = spec
        self.model = model
        self.stream: Stream | None = None
        self.device = torch.device("cpu")

    def bind(self, stream: Stream) -> None:
        """Attach the benchmark's stream (label space, protocol) before training starts.

        Classic backbones build their classifier here; CLIP backbones their text heads.
        """
        self.stream = stream

    def to(self, device: torch.device) -> Backbone:
        """Move the model to ``device``; batches are moved by :meth:`move_batch`."""
        self.device = device
        self.model.to(device)
        return self

    def collate(self, items: Any) -> Batch:
        """Turn dataset items (a list of example dicts, or an already batched dict) into a batch."""
        if isinstance(items, dict):
            return items
        return default_collate(items)

    def move_batch(self, batch: Batch) -> Batch:
        """Move every tensor of ``batch`` to the backbone's device."""
        return {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}

    def eval_batches(self, dataset: Dataset[Any], batch_size: int,
                     loader_kwargs: dict[str, Any] | None = None) -> Iterator[tuple[list[int] | None, Batch]]:
        """The test batches of ``dataset`` for one evaluation pass, with the dataset indices each holds.

        The default yields batches in test order (indices ``None``: consecutive), collated afresh
        every pass so that large image test sets are never held in memory. Backbones whose
        batches are cheap to keep (token ids) override this to collate once per run and to group
        examples of similar length; the runner puts the scores back in test order by the indices.
        ``loader_kwargs`` are the run's DataLoader worker options (:mod:`clbench.loading`).
        """
        for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=self.collate, **(loader_kwargs or {})):
            yield None, batch

    def eval_start(self) -> None:
        """Called before each evaluation pass (one row of the matrix).

        Backbones that cache per-task state for scoring (CLIP text heads) rebuild it here, once
        per pass, since the weights may have changed since the last pass.
        """

    @abstractmethod
    def loss(self, batch: Batch) -> torch.Tensor:
        """Training loss of a batch (mean over examples); examples may come from several tasks."""

    def loss_terms(self, batch: Batch) -> torch.Tensor | None:
        """How many terms :meth:`loss` averages over when they are not the batch's examples (a
        language model: its target tokens), as a 0-dim tensor; ``None``: the examples.

        Data parallelism weights each rank's loss by its share of the global batch's terms
        (:func:`clbench.distributed.token_weighted_loss`), so that the ranks' gradients add up to
        the gradient of the one-process loss.
        """
        return None

    @abstractmethod
    def score(self, batch: Batch, experience: Experience) -> torch.Tensor:
        """Per-example scores in [0, 1] (1 = correct) for evaluating ``experience``."""

    def outputs(self, batch: Batch) -> torch.Tensor:
        """Raw predictions whose distribution distillation methods compare (logits by default)."""
        raise UsageError(f"backbone {self.spec!r} does not expose outputs for distillation")

    def adapter_targets(self, targets: Sequence[str]) -> dict[str, nn.Linear]:
        """Linear layers matching generic target names, as ``{qualified_name: module}``.

        Args:
            targets: generic names (keys of :attr:`target_patterns`) or raw glob patterns over
                module names (anything containing ``*`` or ``.``).

        Raises:
            UsageError: for an unknown target name or a target matching no linear layer.
        """
        found: dict[str, nn.Linear] = {}
        for target in targets:
            matched = self._linear_layers(target)
            if not matched:
                raise UsageError(f"adapter target {target!r} matches no linear layer of {self.spec!r}")
            found.update(matched)
        return dict(sorted(found.items()))

    def _linear_layers(self, target: str) -> dict[str, nn.Linear]:
        """Linear layers one generic target name (or module-name glob) matches; may be empty."""
        if target in self.target_patterns:
            patterns = self.target_patterns[target]
        elif "*" in target or "." in target:
            patterns = (target,)
        else:
            valid = ", ".join(sorted(self.target_patterns))
            raise UsageError(f"unknown adapter target {target!r} for {self.kind} backbone; valid: {valid} (or a glob over module names)")
        return {n: m for n, m in self.model.named_modules() if isinstance(m, nn.Linear) and any(fnmatch.fnmatchcase(n, p) for p in patterns)}

    def default_targets(self, preferred: Sequence[str], strategy: str = "this strategy") -> tuple[str, ...]:
        """A strategy's per-kind default targets as they apply to this backbone.

        The preferred targets that match a linear layer here; when none does, the backbone's
        :attr:`fallback_targets`. Targets a user names explicitly bypass this (they must exist).

        Raises:
            UsageError: no preferred target exists and the backbone has no fallback.
        """
        kept = tuple(t for t in preferred if t not in self.target_patterns or self._linear_layers(t))
        if kept:
            return kept
        if self.fallback_targets:
            return self.fallback_targets
        raise UsageError(f"{strategy} adapts {', '.join(preferred)} layers, which backbone {self.spec!r} does not have; "
                         f"pass -S targets=... with one of: {', '.join(sorted(self.target_patterns)) or 'none'}")

    def placement_targets(self, placement: str) -> tuple[str, ...]:
        """The generic targets an adapter ``placement`` means here (see :attr:`adapter_placements`)."""
        if placement in self.adapter_placements:
            return self.adapter_placements[placement]
        return tuple(t for t in self.target_patterns if t != "head")

    def heads_to_train(self, adapted: Collection[str] = ()) -> dict[str, nn.Linear]:
        """Heads an adapter strategy trains fully: the untrained ones (:attr:`heads_untrained`) no adapter wraps."""
        return self.head_layers(adapted) if self.heads_untrained else {}

    def head_layers(self, adapted: Collection[str] = ()) -> dict[str, nn.Linear]:
        """The classifier heads (target ``head``) that ``train_head`` trains fully, skipping ``adapted`` layers.

        An adapter that wraps a head (a frozen encoder's fallback target) is what trains it, so
        it is not trained fully as well. Empty when the backbone names no head.
        """
        if "head" not in self.target_patterns:
            return {}
        return {n: m for n, m in sorted(self._linear_layers("head").items()) if n not in adapted}

    def describe(self) -> dict[str, Any]:
        """Facts recorded in results: spec, kind, parameter counts."""
        total = sum(p.numel() for p in self.model.parameters())
        trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        return {"spec": self.spec, "kind": self.kind, "parameters": total, "trainable_parameters": trainable}


@runtime_checkable
class TaskHeads(Protocol):
    """A backbone with one classifier head per task (the ViT backbone), checked with ``isinstance``.

    Strategies whose papers train only the current task's head (InfLoRA, CoSO) use it; for every
    other strategy such a backbone is an ordinary classifier over the global label space.
    """

    def set_visible_tasks(self, count: int | None) -> None:
        """Predict with the heads of the first ``count`` tasks only (``None``: every head)."""

    def head_parameters(self, task_index: int) -> list[nn.Parameter]:
        """The parameters of task ``task_index``'s head."""

    def local_labels(self, labels: torch.Tensor, task_index: int) -> torch.Tensor:
        """Global labels as positions in task ``task_index``'s head (-1: not in it)."""

    def head_logits(self, batch: Batch, task_index: int) -> torch.Tensor:
        """Logits of task ``task_index``'s head alone."""
