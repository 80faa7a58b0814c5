"""``CoSOAdamW``: Adam in a moving low-rank subspace orthogonal to earlier tasks' subspaces.

One optimizer holds two kinds of parameter groups (as in the official code, ``coso/adamw.py``):

* **CoSO groups** (``coso=True``): full weight matrices ``W`` (m × n, m = d_out). Each step
  (``quinn-ch/CoSO`` ``coso/adamw.py``):

  1. ``G ← G − M (Mᵀ G)`` against the layer's historical basis ``M`` (set by the strategy);
  2. every ``update_gap`` steps (and on the first), the thin SVD of ``G`` gives the projector
     ``P = U[:, :r]`` and feeds the Frequent Directions sketch with the same SVD;
  3. ``R = Pᵀ G`` (r × n) drives Adam whose moments live in that r × n space (they are not
     rotated when ``P`` changes — as in the code and GaLore);
  4. ``W ← W − lr · P N`` and then decoupled weight decay.

* **plain groups**: AdamW on any other parameter (the per-task heads).

The Adam arithmetic follows the official optimizer (the transformers-style AdamW it copies):
``step_size = lr · sqrt(1 − β2^t) / (1 − β1^t)`` and ``N = mom / (sqrt(vel) + eps)``, i.e.
``m̂ / (sqrt(v̂) + eps / sqrt(1 − β2^t))``; eps defaults to 1e-6.

Per-task state (projector, moments, sketch, step) lives in ``self.state`` so the standard
``state_dict`` / ``load_state_dict`` save and resume it exactly; the historical bases belong to
the strategy and are handed over with :meth:`CoSOAdamW.set_history`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

from clbench.strategies.coso.frequent_directions import FrequentDirections
from clbench.strategies.coso.projector import SVD_METHODS, deflate, top_singular

COSO_DEFAULTS: dict[str, Any] = {
    "coso": False,
    "proj_rank": 15,
    "sketch_rank": 100,
    "update_gap": 1,
    "sketch_decay": 1.0,
    "svd": "full",
    "svd_oversample": 10,
    "svd_power_iters": 2,
    "align_signs": False,
}


class CoSOAdamW(torch.optim.Optimizer):
    """Projected Adam for CoSO groups, AdamW for the rest.

    Args:
        params: parameters or parameter groups. A group with ``coso=True`` is optimised by CoSO
            and may set ``proj_rank`` (r), ``sketch_rank`` (ℓ), ``update_gap`` (T_gap),
            ``sketch_decay`` (β), ``svd`` (``full`` or ``randomized``), ``svd_oversample``,
            ``svd_power_iters`` and ``align_signs`` (align the projector's column signs with the
            previous projector's; always on for the randomized SVD); every parameter in it must
            be a matrix.
        lr: learning rate.
        betas: Adam betas.
        eps: added to ``sqrt(vel)``.
        weight_decay: decoupled weight decay, applied after the update.
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-6,
                 weight_decay: float = 0.0) -> None:
        if lr < 0 or eps < 0 or weight_decay < 0:
            raise ValueError(f"lr, eps and weight_decay must be >= 0; got {lr}, {eps}, {weight_decay}")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay, **COSO_DEFAULTS})
        for group in self.param_groups:
            if not group["coso"]:
                continue
            if group["svd"] not in SVD_METHODS:
                raise ValueError(f"svd must be one of {', '.join(SVD_METHODS)}, got {group['svd']!r}")
            if group["proj_rank"] < 1 or group["sketch_rank"] < 1 or group["update_gap"] < 1:
                raise ValueError("proj_rank, sketch_rank and update_gap must be >= 1")
            for p in group["params"]:
                if p.dim() != 2:
                    raise ValueError(f"CoSO optimises weight matrices; got a parameter of shape {tuple(p.shape)}")
        self._history: dict[torch.nn.Parameter, torch.Tensor] = {}

    # ---- historical subspace (owned by the strategy) ------------------------------------------
    def set_history(self, param: torch.nn.Parameter, basis: torch.Tensor | None) -> None:
        """Protect ``basis`` (m × h, orthonormal columns) in ``param``'s output space from now on."""
        if basis is None or basis.shape[1] == 0:
            self._history.pop(param, None)
            return
        if basis.shape[0] != param.shape[0]:
            raise ValueError(f"history basis has {basis.shape[0]} rows, weight has {param.shape[0]} outputs")
        self._history[param] = basis.to(device=param.device, dtype=torch.float32)

    def sketch(self, param: torch.nn.Parameter) -> FrequentDirections | None:
        """The task's Frequent Directions sketch for ``param`` (``None`` before its first step)."""
        state = self.state.get(param, {})
        if "sketch_basis" not in state:
            return None
        group = next(g for g in self.param_groups if any(p is param for p in g["params"]))
        fd = FrequentDirections(param.shape[0], group["sketch_rank"], group["sketch_decay"], device=param.device)
        return fd.load_tensors(state["sketch_basis"], state["sketch_sigma"], state["sketch_shrinkage"])

    def projector(self, param: torch.nn.Parameter) -> torch.Tensor | None:
        """The current projector ``P`` (m × r) of ``param``, if it has one."""
        return self.state.get(param, {}).get("projector")

    # ---- the step -----------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("CoSOAdamW does not support sparse gradients")
                if group["coso"]:
                    self._coso_update(p, group)
                else:
                    self._adamw_update(p, group)
        return loss

    def _adam_direction(self, state: dict[str, Any], grad: torch.Tensor, group: dict[str, Any]) -> tuple[torch.Tensor, float]:
        """Update the moments with ``grad``; returns ``(mom / (sqrt(vel) + eps), step size)``."""
        if "exp_avg" not in state:
            state["exp_avg"] = torch.zeros_like(grad)
            state["exp_avg_sq"] = torch.zeros_like(grad)
        beta1, beta2 = group["betas"]
        state["step"] += 1
        mom, vel = state["exp_avg"], state["exp_avg_sq"]
        mom.mul_(beta1).add_(grad, alpha=1.0 - beta1)
        vel.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
        step_size = group["lr"] * math.sqrt(1.0 - beta2 ** state["step"]) / (1.0 - beta1 ** state["step"])
        return mom / (vel.sqrt() + group["eps"]), step_size

    def _adamw_update(self, p: torch.nn.Parameter, group: dict[str, Any]) -> None:
        state = self.state[p]
        state.setdefault("step", 0)
        direction, step_size = self._adam_direction(state, p.grad.float(), group)  # type: ignore[union-attr]
        p.add_(direction.to(p.dtype), alpha=-step_size)
        if group["weight_decay"] > 0:
            p.add_(p, alpha=-group["lr"] * group["weight_decay"])

    def _coso_update(self, p: torch.nn.Parameter, group: dict[str, Any]) -> None:
        state = self.state[p]
        state.setdefault("step", 0)
        grad = deflate(p.grad.float(), self._history.get(p))  # type: ignore[union-attr]
        if "projector" not in state or state["step"] % group["update_gap"] == 0:
            self._refresh(p, grad, state, group)
        proj = state["projector"]
        direction, step_size = self._adam_direction(state, proj.t() @ grad, group)
        p.add_((proj @ direction).to(p.dtype), alpha=-step_size)
        if group["weight_decay"] > 0:
            p.add_(p, alpha=-group["lr"] * group["weight_decay"])

    def _refresh(self, p: torch.nn.Parameter, grad: torch.Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        """New projector from the SVD of the (deflated) gradient; the same SVD feeds the sketch."""
        rank, sketch_rank = group["proj_rank"], group["sketch_rank"]
        # ℓ+1 values are needed for the sketch's shrink, r vectors for the projector.
        u, s = top_singular(grad, max(rank, sketch_rank + 1), group["svd"], group["svd_oversample"], group["svd_power_iters"])
        proj = u[:, :rank].contiguous()
        previous = state.get("projector")
        if (group["svd"] == "randomized" or group["align_signs"]) and previous is not None and previous.shape == proj.shape:
            # An SVD returns each singular vector with an arbitrary sign (a randomized one, a new
            # sign every step); since Adam's moments are not rotated with P, a flipped column
            # flips the sign of that direction's momentum. Align each column with the previous
            # projector's. Opt-in for the full SVD, whose official code does not align.
            signs = torch.sign((previous * proj).sum(dim=0))
            proj = proj * torch.where(signs == 0, torch.ones_like(signs), signs)
        state["projector"] = proj
        fd = FrequentDirections(p.shape[0], sketch_rank, group["sketch_decay"], device=grad.device)
        if "sketch_basis" in state:
            fd.load_tensors(state["sketch_basis"], state["sketch_sigma"], state["sketch_shrinkage"])
        fd.update_from_svd(u, s)
        state["sketch_basis"], state["sketch_sigma"], state["sketch_shrinkage"] = fd.tensors()

    def state_size(self, param: torch.nn.Parameter) -> dict[str, tuple[int, ...]]:
        """Shapes of the tensors held for ``param`` (to check moments are r × n, not m × n)."""
        return {k: tuple(v.shape) for k, v in self.state.get(param, {}).items() if torch.is_tensor(v)}
