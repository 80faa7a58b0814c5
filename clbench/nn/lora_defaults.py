"""LoRA's adapter defaults per backbone kind, in one place (``lora`` and ``altlora`` share them).

Where each kind's adapters go is the strategy's placement (``adapter_placement``), which each
backbone maps to its layers; this table holds rank, alpha and dropout.

* ``llm``: TRACE (``BeyonderXX/TRACE``, ``training/main.py``, ``CL_method lora``): peft
  ``LoraConfig(r=8, lora_alpha=32, lora_dropout=0.1)`` with no ``target_modules``, so peft's
  default for LLaMA-style models: ``q_proj`` and ``v_proj``.
* ``clip``: the naive "LoRA (r=16)" baseline of CoDyRA (arXiv 2412.01004): r=16, scaling 1, no
  dropout, on every weight of both encoders (the official ``qkvoinout``).
* ``classic`` and ``vit``: no paper setting; ours (r=8, alpha 16, no dropout; the MLP's hidden
  layers, timm's fused qkv).
"""

from __future__ import annotations

from typing import Any

LORA_KIND_DEFAULTS: dict[str, dict[str, Any]] = {
    "llm": {"rank": 8, "alpha": 32.0, "dropout": 0.1},
    "clip": {"rank": 16, "alpha": 16.0, "dropout": 0.0},
    "classic": {"rank": 8, "alpha": 16.0, "dropout": 0.0},
    "vit": {"rank": 8, "alpha": 16.0, "dropout": 0.0},
}

LORA_DEPARTURES = {
    "rank": "classic and ViT: r=8 is ours (no paper setting); not measured",
    "alpha": "classic and ViT: alpha 16 (scale 2) is ours (no paper setting); not measured",
    "targets": "classic fc (the MLP's hidden layers) and ViT qkv are ours (no paper setting); not measured",
    "lr": "left to the benchmark on every kind (TRACE trains LoRA at 1e-4 for 3-7 epochs of up to 5000 examples, "
          "far longer than clbench's offline budgets); not measured",
}
"""What the per-kind table takes from no paper (``clbench show`` labels these "ours")."""


def resolve_lora(config: Any, backbone_kind: str) -> dict[str, Any]:
    """``rank``, ``alpha`` and ``dropout`` for ``backbone_kind``: set values win.

    Unknown kinds take the classic values. ``alpha`` does not follow an overridden rank (peft's
    convention: the scale becomes alpha / rank).
    """
    defaults = LORA_KIND_DEFAULTS.get(backbone_kind, LORA_KIND_DEFAULTS["classic"])
    return {key: (getattr(config, key) if getattr(config, key) not in (None, ()) else value) for key, value in defaults.items()}
