"""``AltLoRAOptimizer``: alternating least-squares steps on the LoRA factors, with transported momentum.

For one LoRA layer ``W = W₀ + s·B A`` (``A``: r × n, ``B``: m × r) and the full-weight gradient
``G = ∂L/∂W`` (never formed; autograd gives ``∇_A = s·BᵀG`` and ``∇_B = s·G Aᵀ``), every step
updates **A first, then B** (the released ``altlora`` class, ``LucasXinYu/AltLoRA``
``optimizer_new.py``):

* **A-half-step** (B fixed at its current value ``B_t``)::

      P   = (B_tᵀB_t + λI)⁻¹                      r × r, in fp32 (fp64 for fp64 factors)
      g̃A  = P ∇_A                                 the least-squares A step: s·B·g̃A = P_col(B)·G·s²
      T_A = P B_tᵀ B_prev                          carries momentum from col(B_prev) into col(B_t)
      M_A ← β1 T_A M_A + (1 − β1) g̃A
      A   ← A − lr/(1 − β1ᵏ) · M_A,  then  A ← A − lr·wd·A
      B_prev ← B_t

* **B-half-step** with the A just updated (``A_new``) but the gradient ``∇_B`` of the same backward
  pass, i.e. computed at the old A (the released semantics: one backward per step)::

      Q   = (A_new A_newᵀ + λI)⁻¹
      g̃B  = ∇_B Q
      T_B = A_prev A_newᵀ Q                        carries momentum from row(A_prev) into row(A_new)
      M_B ← β1 M_B T_B + (1 − β1) g̃B
      B   ← B − lr/(1 − β1ᵏ) · M_B,  then  B ← B − lr·wd·B
      A_prev ← A_new

``B_prev`` and ``A_prev`` start at zero, so the first step has no momentum to carry (``T = 0``).
A matrix that cannot be inverted falls back to ``I`` (as the code does; it never happens with
λ > 0) and is counted in ``inverse_fallbacks``.

**AltLoRA+** (``variant="altlora_plus"``, the released ``altlora_plus``) divides the transported
numerator by an Adam-style second moment of the scaled gradient (no bias correction on ``V``)::

      V   ← β2 V + (1 − β2) g̃⊙g̃
      A   ← A − lr/(1 − β1ᵏ) · (β1 T_A M_A + (1 − β1) g̃A) / (√V + ε)
      M_A ← β1 M_A + (1 − β1) g̃A                  ⚠ stored untransported, as released

Options that reproduce or correct the released code (see ``docs/strategies/altlora.md``):

* ``inv_s2_scaling``: divide the scaled gradients by s² (the least-squares derivation's factor;
  the code absorbs it into lr). Off by default, as released.
* ``follow_lr_schedule``: read each group's scheduled ``lr`` (on by default). Off reproduces the
  released optimizer, which reads its construction-time lr and so ignores the HF scheduler.
* ``plus_transport_stored_momentum``: store the transported momentum in AltLoRA+ (off: as released).
* ``alternation="blocks"``: the trainer's ``alt=True`` mode: both factors for the first
  ``alternation_block`` steps, then only A for a block, only B for the next, and so on.

Groups with ``altlora=True`` hold exactly ``[A, B]`` of one layer (paired explicitly; the code
pairs them by ``named_parameters()`` order) and its ``scaling``. Other groups (task heads) get
plain AdamW through :func:`torch.optim.adamw.adamw`. All state lives in ``self.state``, so the
standard ``state_dict`` / ``load_state_dict`` save and resume a run exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim.adamw import adamw

from clbench.strategies.altlora.config import ALTERNATIONS, VARIANTS


ALTLORA_DEFAULTS: dict[str, Any] = {
    "altlora": False,
    "scaling": 1.0,
    "reg": 1e-5,
    "variant": "altlora",
    "inv_s2_scaling": False,
    "follow_lr_schedule": True,
    "plus_transport_stored_momentum": False,
    "alternation": "both",
    "alternation_block": 10,
}


def work_dtype(param: torch.Tensor) -> torch.dtype:
    """fp32 for every parameter dtype except fp64 (the r × r inverses never run in half precision)."""
    return torch.float64 if param.dtype == torch.float64 else torch.float32


def regularized_inverse(gram: torch.Tensor, reg: float) -> tuple[torch.Tensor, bool]:
    """``(gram + reg·I)⁻¹``, or ``(I, False)`` when it cannot be inverted (the code's fallback)."""
    eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    inverse, info = torch.linalg.inv_ex(gram + reg * eye)
    if int(info) != 0 or not bool(torch.isfinite(inverse).all()):
        return eye, False
    return inverse, True


def active_factors(step: int, alternation: str, block: int) -> tuple[bool, bool]:
    """Which factors step ``step`` (0-based) updates: ``(A, B)``.

    ``both``: every step updates A then B. ``blocks``: both for the first ``block`` steps, then
    A only for ``block`` steps, B only for the next ``block``, alternating (the trainer's ``alt``).
    """
    if alternation == "both" or step < block:
        return True, True
    a_turn = ((step - block) // block) % 2 == 0
    return a_turn, not a_turn


class AltLoRAOptimizer(torch.optim.Optimizer):
    """AltLoRA / AltLoRA+ on LoRA factor pairs, AdamW on any other parameter.

    Args:
        params: parameter groups. A group with ``altlora=True`` holds ``[A, B]`` of one LoRA
            layer and sets ``scaling`` (s = alpha / r); it may also set ``reg`` (λ), ``variant``,
            ``inv_s2_scaling``, ``follow_lr_schedule``, ``plus_transport_stored_momentum``,
            ``alternation`` and ``alternation_block``.
        lr: learning rate.
        betas: β1 (momentum) and β2 (AltLoRA+ second moment and AdamW).
        eps: AltLoRA+ ε (1e-4 in the official run) — AdamW groups use their own ``eps``
            (default 1e-8, torch's).
        weight_decay: decoupled weight decay, applied after each factor's update (AltLoRA) or
            before it (AdamW, torch's order).
        reg: λ, the ridge added to the r × r Gram matrices.
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-4,
                 weight_decay: float = 1e-5, reg: float = 1e-5) -> None:
        if lr < 0 or eps < 0 or weight_decay < 0 or reg < 0:
            raise ValueError(f"lr, eps, weight_decay and reg must be >= 0; got {lr}, {eps}, {weight_decay}, {reg}")
        if not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"betas must be in [0, 1), got {betas}")
        defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay, **ALTLORA_DEFAULTS, "reg": reg}
        super().__init__(params, defaults)
        for group in self.param_groups:
            group.setdefault("base_lr", group["lr"])
            if not group["altlora"]:
                group.setdefault("adamw_eps", 1e-8)
                continue
            group.setdefault("pair_steps", 0)
            if len(group["params"]) != 2:
                raise ValueError("an altlora group holds exactly [A, B] of one LoRA layer")
            a, b = group["params"]
            if a.dim() != 2 or b.dim() != 2 or a.shape[0] != b.shape[1]:
                raise ValueError(f"altlora group needs A (r × n) and B (m × r); got {tuple(a.shape)} and {tuple(b.shape)}")
            if group["variant"] not in VARIANTS:
                raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {group['variant']!r}")
            if group["alternation"] not in ALTERNATIONS:
                raise ValueError(f"alternation must be one of {', '.join(ALTERNATIONS)}, got {group['alternation']!r}")
            if group["alternation_block"] < 1:
                raise ValueError("alternation_block must be >= 1")
        self.inverse_fallbacks = 0

    # ---- the step -----------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            if group["altlora"]:
                self._pair_step(group)
            else:
                self._adamw_step(group)
        return loss

    def _lr(self, group: dict[str, Any]) -> float:
        return group["lr"] if group["follow_lr_schedule"] else group["base_lr"]

    def _pair_step(self, group: dict[str, Any]) -> None:
        a, b = group["params"]
        update_a, update_b = active_factors(group["pair_steps"], group["alternation"], group["alternation_block"])
        grad_b = b.grad  # taken before A moves: the B-step uses the gradient of this backward pass
        if update_a and a.grad is not None:
            self._half_step(a, a.grad, b, "b_prev", group)
        if update_b and grad_b is not None:
            self._half_step(b, grad_b, a, "a_prev", group)
        group["pair_steps"] += 1

    def _fresh_state(self, param: torch.Tensor, other: torch.Tensor, prev_key: str, group: dict[str, Any],
                     previous: torch.Tensor | None = None) -> dict[str, Any]:
        """Zero moments and step for ``param``; ``prev_key`` holds the other factor's last value (zeros at first)."""
        state = self.state[param]
        state["step"] = 0
        state["exp_avg"] = torch.zeros(param.shape, dtype=work_dtype(param), device=param.device)
        state[prev_key] = (torch.zeros(other.shape, dtype=work_dtype(other), device=other.device) if previous is None
                           else previous.to(device=other.device, dtype=work_dtype(other)).clone())
        if group["variant"] == "altlora_plus":
            state["exp_avg_sq"] = torch.zeros(param.shape, dtype=work_dtype(param), device=param.device)
        return state

    def _half_step(self, param: torch.Tensor, grad: torch.Tensor, other: torch.Tensor, prev_key: str, group: dict[str, Any]) -> None:
        """One factor's step with the other factor fixed: A (``prev_key="b_prev"``) or B (``"a_prev"``).

        For A the preconditioner ``(BᵀB + λI)⁻¹`` and the transport ``P BᵀB_prev`` act from the left;
        for B, ``(AAᵀ + λI)⁻¹`` and ``A_prev Aᵀ Q`` act from the right.
        """
        state = self.state[param] or self._fresh_state(param, other, prev_key, group)
        fixed = other.to(work_dtype(other))
        is_a = prev_key == "b_prev"
        precond, ok = regularized_inverse(fixed.t() @ fixed if is_a else fixed @ fixed.t(), group["reg"])
        self.inverse_fallbacks += not ok
        grad = grad.to(fixed.dtype)
        scaled = precond @ grad if is_a else grad @ precond
        if group["inv_s2_scaling"]:
            scaled = scaled / group["scaling"] ** 2
        if is_a:
            transport = precond @ fixed.t() @ state[prev_key]
            direction = self._moments(state, scaled, lambda m: transport @ m, group)
        else:
            transport = state[prev_key] @ fixed.t() @ precond
            direction = self._moments(state, scaled, lambda m: m @ transport, group)
        lr = self._lr(group)
        param.add_(direction.to(param.dtype), alpha=-lr)
        if group["weight_decay"] > 0:
            param.add_(param, alpha=-lr * group["weight_decay"])
        state[prev_key] = fixed.clone()

    @staticmethod
    def _moments(state: dict[str, Any], scaled: torch.Tensor, transport: Callable[[torch.Tensor], torch.Tensor],
                 group: dict[str, Any]) -> torch.Tensor:
        """Advance the factor's moments; returns the update direction (lr not applied)."""
        beta1, beta2 = group["betas"]
        state["step"] += 1
        correction = 1.0 - beta1 ** state["step"]
        carried = beta1 * transport(state["exp_avg"]) + (1.0 - beta1) * scaled
        if group["variant"] == "altlora":
            state["exp_avg"] = carried
            return carried / correction
        state["exp_avg_sq"].mul_(beta2).addcmul_(scaled, scaled, value=1.0 - beta2)
        state["exp_avg"] = carried if group["plus_transport_stored_momentum"] else beta1 * state["exp_avg"] + (1.0 - beta1) * scaled
        return carried / (state["exp_avg_sq"].sqrt() + group["eps"]) / correction

    def _adamw_step(self, group: dict[str, Any]) -> None:
        params, grads, exp_avgs, exp_avg_sqs, steps = [], [], [], [], []
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            if not state:
                state["step"] = torch.tensor(0.0)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            params.append(p)
            grads.append(p.grad)
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
            steps.append(state["step"])
        if params:
            beta1, beta2 = group["betas"]
            adamw(params, grads, exp_avgs, exp_avg_sqs, [], steps, amsgrad=False, beta1=beta1, beta2=beta2, lr=group["lr"],
                  weight_decay=group["weight_decay"], eps=group["adamw_eps"], maximize=False, foreach=False)

    # ---- inspection -----------------------------------------------------------------------------
    def previous_factors(self) -> dict[int, tuple[torch.Tensor | None, torch.Tensor | None]]:
        """``(B_prev, A_prev)`` per altlora group index (for carrying them across a task boundary)."""
        out = {}
        for index, group in enumerate(self.param_groups):
            if group["altlora"]:
                a, b = group["params"]
                out[index] = (self.state.get(a, {}).get("b_prev"), self.state.get(b, {}).get("a_prev"))
        return out

    def seed_previous_factors(self, factors: dict[int, tuple[torch.Tensor | None, torch.Tensor | None]]) -> None:
        """Start each pair's transport from saved ``(B_prev, A_prev)`` instead of zeros (moments stay fresh)."""
        for index, (b_prev, a_prev) in factors.items():
            group = self.param_groups[index]
            a, b = group["params"]
            if b_prev is not None:
                self._fresh_state(a, b, "b_prev", group, b_prev)
            if a_prev is not None:
                self._fresh_state(b, a, "a_prev", group, a_prev)

    def state_bytes(self) -> int:
        """Bytes held in optimizer state tensors (moments and stored factors)."""
        return sum(v.numel() * v.element_size() for s in self.state.values() for v in s.values() if torch.is_tensor(v))
