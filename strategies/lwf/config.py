"""Settings of ``lwf``: the documented config dataclass (``-S`` keys)."""

from __future__ import annotations

from dataclasses import dataclass

from clbench.api import FullModelConfig


@dataclass(frozen=True, kw_only=True)
class LwFConfig(FullModelConfig):
    """Learning without Forgetting.

    Attributes:
        lwf_lambda: λ, weight of the distillation term (LwF's λ_o = 1).
        temperature: softmax temperature T of both distributions (LwF: 2).
        distill_first_task: also distill toward the initial (pretrained) model on the first
            task; off by default, as in LwF, where the first task has no old outputs.
        train_params: globs over parameter names to train (empty = every parameter).
    """

    lwf_lambda: float = 1.0
    temperature: float = 2.0
    distill_first_task: bool = False
    train_params: tuple[str, ...] = ()

    DEPARTURES = {
        "train_params": "every parameter (LwF trains shared and new-task parameters); on LLMs distillation runs on the generated-token distributions, a setting the paper has no recipe for; not measured",
    }

    def __post_init__(self) -> None:
        if self.lwf_lambda < 0:
            raise ValueError(f"lwf_lambda must be >= 0, got {self.lwf_lambda}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
