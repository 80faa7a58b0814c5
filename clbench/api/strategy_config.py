"""Strategy configs: the base dataclass every strategy's settings extend.

Kept free of torch so that ``clbench show STRATEGY`` can build a strategy's config (its defaults
per backbone kind) by importing only the strategy's ``config.py``; :mod:`clbench.api.strategy`
re-exports both classes.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar


@dataclass(frozen=True, kw_only=True)
class StrategyConfig:
    """Base config: optional overrides of the benchmark's training settings.

    ``None`` keeps the benchmark's value. Subclasses add their own fields (each documented in
    the class docstring) and may give these fields the defaults of their paper.

    Attributes:
        epochs: passes over each task's training data.
        iterations: optimizer steps per task (overrides epochs).
        batch_size: training batch size.
        lr: peak learning rate.
        optimizer: ``adamw``, ``adam`` or ``sgd``.
        betas: Adam betas.
        weight_decay: weight decay.
        scheduler: ``constant`` or ``cosine``.
        grad_accum: micro-batches per optimizer step.
        max_grad_norm: gradient-norm clipping (0 disables).
        amp: ``none``, ``bf16`` or ``fp16``.
        nonfinite_loss: ``stop`` (the run stops at the first NaN/inf loss) or ``skip`` (that
            batch's update is skipped).
    """

    epochs: int | None = None
    iterations: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    optimizer: str | None = None
    betas: tuple[float, float] | None = None
    weight_decay: float | None = None
    scheduler: str | None = None
    grad_accum: int | None = None
    max_grad_norm: float | None = None
    amp: str | None = None
    nonfinite_loss: str | None = None

    def train_overrides(self, backbone_kind: str) -> dict[str, Any]:
        """The training-setting fields of this config (``None`` = keep the benchmark's), with the
        strategy's per-kind defaults (:meth:`kind_train_defaults`) where the user set none."""
        base = {f.name for f in fields(StrategyConfig)}
        overrides = {f.name: getattr(self, f.name) for f in fields(self) if f.name in base}
        for key, value in self.kind_train_defaults(backbone_kind).items():
            if overrides.get(key) is None:
                overrides[key] = value
        return overrides

    def kind_train_defaults(self, backbone_kind: str) -> dict[str, Any]:
        """Training settings this strategy's paper uses on ``backbone_kind`` (none by default).

        The one place a strategy declares per-kind training defaults (e.g. the official runner's
        optimizer on CLIP); a value the user gives with ``-S`` always wins.
        """
        return {}

    def for_kind(self, backbone_kind: str) -> dict[str, Any]:
        """Every setting as it applies on ``backbone_kind``: :meth:`to_dict` with the per-kind
        defaults a strategy resolves filled in (``None`` = the benchmark's value or the
        backbone's default). ``clbench show`` prints these; subclasses whose adapter settings
        depend on the kind extend it."""
        values = self.to_dict()
        values.update({k: v for k, v in self.train_overrides(backbone_kind).items() if v is not None})
        values.update({k: list(v) if isinstance(v, tuple) else v for k, v in self.kind_settings(backbone_kind).items()})
        return values

    NONE_IS_A_VALUE: ClassVar[frozenset[str]] = frozenset({"amp"})
    """Settings for which ``-S key=none`` names the value ``none`` (``amp=none``: no autocast, even on a
    benchmark whose ``[train]`` sets bf16) instead of "keep the benchmark's value"."""

    DEPARTURES: ClassVar[dict[str, str]] = {}
    """Settings whose default is ours, not the paper's or the official code's, with the reason and
    the measurement behind it (or "not measured"); ``clbench show`` labels them "ours"."""

    def kind_settings(self, backbone_kind: str) -> dict[str, Any]:
        """The method settings whose default depends on the backbone kind, resolved for it.

        ``clbench show`` prints them per kind; ``{}`` (the default) when none depends on the kind.
        """
        return {}

    def to_dict(self) -> dict[str, Any]:
        """Every field and its value, JSON-ready (tuples become lists)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out


@dataclass(frozen=True, kw_only=True)
class FullModelConfig(StrategyConfig):
    """Config base of strategies that train the backbone's own weights, not adapters (finetune,
    joint, ewc, lwf, replay).

    Attributes:
        llm_lr: learning rate on LLM backbones when ``lr`` is not given (TRACE's full-parameter
            1e-5): full fine-tuning at the adapter rates destroys a pretrained LM in a few steps.
    """

    llm_lr: float = 1e-5  # TRACE's full-parameter lr (BeyonderXX/TRACE scripts/train_seq_naive.sh)

    def kind_train_defaults(self, backbone_kind: str) -> dict[str, Any]:
        return {"lr": self.llm_lr} if backbone_kind == "llm" else {}
