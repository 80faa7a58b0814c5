"""Adapters at export time: fold the ones that are a fixed weight update, keep the others apart.

An adapter whose update does not depend on the input (LoRA, per-task LoRA banks, CoDyRA's gated
LoRA) is a weight delta ``ΔW``; folding writes ``W + ΔW`` into the base layer and puts the plain
layer back, so the exported model has the backbone's own architecture. CoDyRA and SaRA already
leave a plain model after every task, and full fine-tuning methods never wrap a layer.

Routed adapters (MoRA's bank of rank-1 experts, SMoRA, FlyLoRA) pick experts per token, so their
update depends on the input and cannot be folded. Their export is the plain backbone (the wrapped
layers' base weights, plus anything the run trained outside the adapters, e.g. a head) and an
``adapters.safetensors`` file with every adapter tensor, which :func:`attach_adapters` puts back
on a backbone: the strategy is rebuilt from its recorded name and settings, ``setup`` wraps the
same layers, ``load_state_dict`` regrows its banks, and the saved tensors are loaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from clbench.errors import UsageError
from clbench.nn.lora import LoRALinear, replace_submodule
from clbench.nn.multi_lora import TaskLoRALinear

ADAPTERS_FILE = "adapters.safetensors"
ADAPTERS_META = "adapters.json"


@torch.no_grad()
def fold_adapters(model: nn.Module) -> int:
    """Merge every fixed-update adapter into its base layer and unwrap it; returns how many."""
    folded = 0
    for name, module in list(model.named_modules()):
        if isinstance(module, LoRALinear) or _folds_itself(module):
            module.merge_()
        elif isinstance(module, TaskLoRALinear):
            module.base.weight.add_(module.delta_weight().to(module.base.weight.dtype))
        else:
            continue
        replace_submodule(model, name, module.base)
        folded += 1
    return folded


def _folds_itself(module: nn.Module) -> bool:
    """A strategy's wrapper whose update is a fixed weight delta says so with ``merge_()`` (CoDyRA's
    gated LoRA): found by that method, since the export, like the runner, never imports a strategy."""
    return isinstance(getattr(module, "base", None), nn.Linear) and callable(getattr(module, "merge_", None))


def wrapped_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Adapter wrappers still in ``model`` (modules holding the layer they wrap as ``base``)."""
    return {name: m for name, m in model.named_modules() if isinstance(getattr(m, "base", None), nn.Linear)}


def split_adapters(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Take the remaining wrappers off ``model``: returns their tensors (``LAYER.NAME``, the
    wrapped base layer excluded) and class per layer; the base layers are put back in place."""
    tensors: dict[str, torch.Tensor] = {}
    classes: dict[str, str] = {}
    for name, wrapper in wrapped_layers(model).items():
        classes[name] = f"{type(wrapper).__module__}.{type(wrapper).__qualname__}"
        for key, value in wrapper.state_dict().items():
            if not key.startswith("base."):
                tensors[f"{name}.{key}"] = value.detach().cpu().contiguous().clone()
        replace_submodule(model, name, wrapper.base)  # type: ignore[arg-type]
    return tensors, classes


def adapter_record(strategy: str, overrides: dict[str, str], strategy_state: dict[str, Any], classes: dict[str, str]) -> dict[str, Any]:
    """What :func:`attach_adapters` needs besides the tensors (JSON).

    Raises:
        UsageError: the strategy's state holds something JSON cannot store (its adapters cannot
            be exported this way).
    """
    try:
        state = json.loads(json.dumps(strategy_state))
    except (TypeError, ValueError):
        raise UsageError(f"strategy {strategy!r} keeps state that is not plain data, so its unmerged adapters cannot be exported") from None
    return {"strategy": strategy, "overrides": dict(overrides), "strategy_state": state, "layers": classes}


def attach_adapters(backbone: Any, folder: Path | str, device: str = "cpu") -> Any:
    """Put an export's unmerged adapters back on ``backbone`` (built from the export's base
    weights and bound to a stream); returns the rebuilt strategy, whose eval hooks the
    evaluation may call.

    Raises:
        UsageError: the folder has no adapter files, or they do not fit this backbone.
    """
    from safetensors.torch import load_file

    from clbench import registry
    from clbench.api.strategy import RunContext
    from clbench.config import build_config

    folder = Path(folder)
    try:
        meta = json.loads((folder / ADAPTERS_META).read_text(encoding="utf-8"))
        tensors = load_file(str(folder / ADAPTERS_FILE))
    except FileNotFoundError as exc:
        raise UsageError(f"{folder}: no unmerged adapters to attach ({Path(exc.filename or '').name} is missing)") from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"{folder}: adapter files are damaged ({type(exc).__name__})") from None
    cls, plugin = registry.get_strategy(meta["strategy"])
    config = build_config(cls.Config, meta["overrides"], owner=f"strategy {plugin.name!r}")
    stream = getattr(backbone, "stream", None)
    if stream is None:
        raise UsageError("bind the backbone to a benchmark's stream before attaching adapters")
    from clbench.api.benchmark import TrainSettings

    ctx = RunContext(stream=stream, train=TrainSettings(), device=torch.device(device), seed=0)
    strategy = cls(config, ctx)
    strategy.setup(backbone)
    strategy.load_state_dict(meta["strategy_state"])
    missing = sorted(set(wrapped_layers(backbone.model)) ^ set(meta["layers"]))
    if missing:
        raise UsageError(f"{folder}: the adapters were saved for other layers than {meta['strategy']} wraps here ({', '.join(missing[:3])})")
    state = backbone.model.state_dict()
    unknown = sorted(set(tensors) - set(state))
    if unknown:
        raise UsageError(f"{folder}: adapter tensors the rebuilt model lacks: {', '.join(unknown[:3])}")
    with torch.no_grad():
        for key, value in tensors.items():
            if state[key].shape != value.shape:
                raise UsageError(f"{folder}: adapter tensor {key} has shape {tuple(value.shape)}, the rebuilt layer {tuple(state[key].shape)}")
            state[key].copy_(value)
    backbone.model.eval()
    return strategy
