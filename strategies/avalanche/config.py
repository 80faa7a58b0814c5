"""Config dataclasses built from an avalanche-lib strategy's constructor signature.

``-S`` keys of ``avalanche:<Strategy>`` are the constructor's own hyperparameters (``ewc_lambda``,
``mem_size``, ``alpha``...): every parameter with a plain type (int, float, bool, str, or an
optional of one) becomes a config field with avalanche's default. Parameters that the adapter
supplies itself (model, optimizer, criterion, batch sizes, epochs, device, plugins, evaluator)
are not settings. A few hyperparameters have no avalanche default; :data:`FALLBACK_DEFAULTS`
gives them the values of the EWC and LwF papers' worked examples and of avalanche's own
examples, and any other required one must be given with ``-S``.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import types
import typing
from dataclasses import dataclass
from typing import Any

from clbench.api import StrategyConfig
from clbench.errors import UsageError

# Constructor parameters the adapter fills in; never user settings.
SUPPLIED = frozenset({"self", "model", "optimizer", "criterion", "train_mb_size", "train_epochs", "eval_mb_size", "device",
                      "plugins", "evaluator", "eval_every", "peval_mode", "base_kwargs"})
PLAIN_TYPES = (int, float, bool, str)

# Hyperparameters avalanche makes required, with the values used here when -S omits them.
# EWC λ=100 and LwF α=1, T=2 are common worked-example settings (T=2 is LwF's paper
# value); GEM's 0.5 memory strength is the GEM paper's default; SI's λ=1 is avalanche's
# examples value. Every other required parameter must be passed with -S.
FALLBACK_DEFAULTS: dict[str, dict[str, Any]] = {
    "EWC": {"ewc_lambda": 100.0},
    "LwF": {"alpha": 1.0, "temperature": 2.0},
    "GEM": {"patterns_per_exp": 256, "memory_strength": 0.5},
    "AGEM": {"patterns_per_exp": 256, "sample_size": 256},
    "SynapticIntelligence": {"si_lambda": 1.0},
}


@dataclass(frozen=True, kw_only=True)
class AvalancheConfig(StrategyConfig):
    """Settings shared by every ``avalanche:<Strategy>``; the avalanche strategy's own
    hyperparameters are added as further fields by :func:`config_for`.

    Attributes:
        reset_optimizer: give the avalanche strategy a fresh optimizer before each task, as
            clbench's runner does for its own strategies (avalanche 0.6 otherwise keeps the
            optimizer state across experiences).
    """

    reset_optimizer: bool = True

    DEPARTURES = {
        "reset_optimizer": "a fresh optimizer per task, as clbench's own strategies (avalanche 0.6 keeps the state "
                           "across experiences); not measured",
    }


def _plain(annotation: Any) -> Any | None:
    """``annotation`` if it is a plain type or an optional of one, else ``None``."""
    if annotation in PLAIN_TYPES:
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if args and all(a in PLAIN_TYPES for a in args):
            return annotation
    return None


def _parameter_docs(strategy_cls: type) -> dict[str, str]:
    """``:param name: text`` entries of the avalanche constructor's docstring, one line each."""
    text = inspect.getdoc(strategy_cls.__init__) or ""
    docs = {}
    for match in re.finditer(r":param (\w+):(.*?)(?=:param |:return|\Z)", text, flags=re.S):
        docs[match.group(1)] = " ".join(match.group(2).split())
    return docs


def constructor_parameters(strategy_cls: type) -> dict[str, inspect.Parameter]:
    """The avalanche strategy's own keyword parameters (adapter-supplied ones left out)."""
    params = inspect.signature(strategy_cls.__init__).parameters
    return {n: p for n, p in params.items() if n not in SUPPLIED and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}


def config_for(name: str, strategy_cls: type) -> type[AvalancheConfig]:
    """A frozen config dataclass whose extra fields are ``strategy_cls``'s hyperparameters.

    Raises:
        UsageError: a required constructor parameter has a type that cannot be set from the
            command line (so the strategy cannot be built by this adapter).
    """
    try:
        hints = typing.get_type_hints(strategy_cls.__init__)
    except Exception:  # unresolvable forward references: fall back to raw annotations
        hints = {}
    fallback = FALLBACK_DEFAULTS.get(name, {})
    required: list[str] = []
    specs: list[tuple[str, Any, Any]] = []
    for pname, param in constructor_parameters(strategy_cls).items():
        annotation = _plain(hints.get(pname, param.annotation))
        if annotation is None and param.default is not inspect.Parameter.empty and isinstance(param.default, PLAIN_TYPES):
            annotation = type(param.default)  # unannotated, but with a plain default
        if annotation is None and pname in fallback:
            annotation = type(fallback[pname])  # e.g. LwF's alpha: float or a per-task list
        has_default = param.default is not inspect.Parameter.empty
        if annotation is None:
            if not has_default and pname not in fallback:
                raise UsageError(f"avalanche:{name} needs {pname!r}, which cannot be set from the command line; build it in Python instead")
            continue
        if has_default:
            specs.append((pname, annotation, dataclasses.field(default=param.default)))
        elif pname in fallback:
            specs.append((pname, annotation, dataclasses.field(default=fallback[pname])))
        else:  # required without a fallback: None until -S sets it
            required.append(pname)
            specs.append((pname, annotation | None, dataclasses.field(default=None)))
    taken = {f.name for f in dataclasses.fields(AvalancheConfig)}
    clashes = sorted(taken & {s[0] for s in specs})
    if clashes:
        raise UsageError(f"avalanche:{name} has parameters named like clbench settings: {', '.join(clashes)}")

    def check_required(self: Any) -> None:
        missing = [p for p in required if getattr(self, p) is None]
        if missing:
            raise ValueError(f"avalanche:{name} needs {', '.join(missing)}; pass -S {missing[0]}=VALUE")

    described = _parameter_docs(strategy_cls)
    lines = [f"    {s[0]}: {described.get(s[0], '(see avalanche)')}" for s in specs]
    doc = f"Settings of ``avalanche:{name}``: clbench's shared fields plus {name}'s constructor hyperparameters.\n\nAttributes:\n" + "\n".join(lines)
    return dataclasses.make_dataclass(f"Avalanche{name}Config", specs, bases=(AvalancheConfig,), frozen=True, kw_only=True,
                                      namespace={"__post_init__": check_required, "__doc__": doc,
                                                 "avalanche_parameters": tuple(s[0] for s in specs)})
