"""Settings of ``joint``: the documented config dataclass (``-S`` keys)."""

from __future__ import annotations

from dataclasses import dataclass

from clbench.api import FullModelConfig


@dataclass(frozen=True, kw_only=True)
class JointConfig(FullModelConfig):
    """Joint training on all data seen so far, with every parameter trainable.

    Attributes:
        restart: before each task, reset the model to its initial weights, so row t is a model
            trained jointly on tasks 1..t from scratch (the standard upper reference); with
            ``false`` training continues from the previous row's model (cheaper, nearly equal).
    """

    restart: bool = True

    DEPARTURES = {
        "lr": "the benchmark's on classic, CLIP and ViT (an upper reference with no paper of its own); LLM 1e-5 as TRACE's full fine-tuning; not measured",
    }
