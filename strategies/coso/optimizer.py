"""``CoSOAdamW``: Adam in a moving low-rank subspace orthogonal to earlier tasks' subspaces.

One optimizer holds two kinds of parameter groups (as in the official code, ``coso/adamw.py``):

* **CoSO groups** (``coso=True``): full weight matrices ``W`` (m × n, m = d_out). Each step
  (``quinn-ch/CoSO`` ``coso/adamw.py``):

  1. ``G ← G − M (Mᵀ G)`` against the layer's historical basis ``M`` (set by the strategy);
  2. every ``update_gap`` steps (and on the first), the SVD of ``G`` gives the projector
     ``P = U[:, :r]`` and feeds the Frequent Directions sketch with the same SVD;
  3. ``R = Pᵀ G`` (r × n) drives Adam whose moments live in that r × n space (they are not
     rotated when ``P`` changes — as in the code and GaLore);
  4. ``W ← W − lr · P N`` and then decoupled weight decay.

* **plain groups**: AdamW on any other parameter (the per-task heads).

The Adam arithmetic follows the official optimizer (the transformers-style AdamW it copies):
``step_size = lr · sqrt(1 − β2^t) / (1 − β1^t)`` and ``N = mom / (sqrt(vel) + eps)``, i.e.
``m̂ / (sqrt(v̂) + eps / sqrt(1 − β2^t))``; eps defaults to 1e-6.

Two SVD methods (``svd``): ``full`` takes the exact thin SVD of each layer's gradient and merges
the sketch by QR + SVD, as the official code does. ``randomized`` refreshes all layers of one shape
together (stacked into a reused ``[L, m, n]`` workspace, deflated in place): a randomized range
finder warm-started from the previous refresh's right vectors (a Gaussian start with power
iterations on a task's first refresh), ``R`` from the small factors, and the sketch merged through
a small eigenproblem (:func:`~clbench.strategies.coso.frequent_directions.merge_batch`).

Per-task state (projector, moments, sketch, step, the randomized warm start) lives in
``self.state`` so the standard ``state_dict`` / ``load_state_dict`` save and resume it exactly
(the Gaussian starts come from a generator seeded by the step); the historical bases belong to the
strategy and are handed over with :meth:`CoSOAdamW.set_history`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

from clbench.strategies.coso.frequent_directions import FrequentDirections, merge_batch, shrink
from clbench.strategies.coso.projector import SVD_METHODS, RangeSVD, deflate, fast_sketch_dtype, randomized_svd, top_singular

COSO_DEFAULTS: dict[str, Any] = {
    "coso": False,
    "proj_rank": 15,
    "sketch_rank": 100,
    "update_gap": 1,
    "sketch_decay": 1.0,
    "svd": "full",
    "svd_oversample": 10,
    "svd_power_iters": 2,
    "svd_warm_start": True,
    "svd_warm_power_iters": 0,
    "svd_sketch_dtype": "auto",
    "align_signs": False,
}

SKETCH_DTYPES = ("auto", "float32", "bfloat16")

# Seed of the Gaussian test matrices of cold randomized refreshes (plus the step), so a resumed
# run draws the same ones.
COLD_START_SEED = 0x5EED


class CoSOAdamW(torch.optim.Optimizer):
    """Projected Adam for CoSO groups, AdamW for the rest.

    Args:
        params: parameters or parameter groups. A group with ``coso=True`` is optimised by CoSO
            and may set ``proj_rank`` (r), ``sketch_rank`` (ℓ), ``update_gap`` (T_gap),
            ``sketch_decay`` (β), ``svd`` (``full`` or ``randomized``), ``svd_oversample``,
            ``svd_power_iters`` (from a Gaussian start), ``svd_warm_start`` (start each randomized
            refresh from the previous one's right vectors), ``svd_warm_power_iters`` (iterations
            after a warm start), ``svd_sketch_dtype`` (``auto``, ``float32`` or ``bfloat16``: the
            dtype of the range finder's products; ``auto`` is bf16 where it is native) and
            ``align_signs`` (align the projector's column signs with the
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
            if min(group["svd_oversample"], group["svd_power_iters"], group["svd_warm_power_iters"]) < 0:
                raise ValueError("svd_oversample, svd_power_iters and svd_warm_power_iters must be >= 0")
            if group["svd_sketch_dtype"] not in SKETCH_DTYPES:
                raise ValueError(f"svd_sketch_dtype must be one of {', '.join(SKETCH_DTYPES)}, got {group['svd_sketch_dtype']!r}")
            for p in group["params"]:
                if p.dim() != 2:
                    raise ValueError(f"CoSO optimises weight matrices; got a parameter of shape {tuple(p.shape)}")
        self._history: dict[torch.nn.Parameter, torch.Tensor] = {}
        # Reused [L, m, n] stacks of deflated gradients, one per (shape, layers, device): not state.
        self._stacks: dict[tuple[Any, ...], torch.Tensor] = {}

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
            params = [p for p in group["params"] if p.grad is not None]
            if any(p.grad.is_sparse for p in params):  # type: ignore[union-attr]
                raise RuntimeError("CoSOAdamW does not support sparse gradients")
            if not group["coso"]:
                for p in params:
                    self._adamw_update(p, group)
            elif group["svd"] == "randomized":
                self._randomized_group_step(params, group)
            else:
                for p in params:
                    self._coso_update(p, group)
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

    def _projected_update(self, p: torch.nn.Parameter, projected: torch.Tensor, group: dict[str, Any]) -> None:
        """Adam on ``R = Pᵀ G`` and ``W ← W − step · P N`` (one in-place GEMM for fp32 weights)."""
        state = self.state[p]
        direction, step_size = self._adam_direction(state, projected, group)
        proj = state["projector"]
        if p.dtype == proj.dtype:
            p.addmm_(proj, direction, alpha=-step_size)
        else:
            p.add_((proj @ direction).to(p.dtype), alpha=-step_size)
        if group["weight_decay"] > 0:
            p.add_(p, alpha=-group["lr"] * group["weight_decay"])

    def _needs_refresh(self, state: dict[str, Any], group: dict[str, Any]) -> bool:
        state.setdefault("step", 0)
        return "projector" not in state or state["step"] % group["update_gap"] == 0

    # ---- the full SVD (the official code's refresh) ---------------------------------------------
    def _coso_update(self, p: torch.nn.Parameter, group: dict[str, Any]) -> None:
        state = self.state[p]
        grad = deflate(p.grad.float(), self._history.get(p))  # type: ignore[union-attr]
        if self._needs_refresh(state, group):
            self._refresh(p, grad, state, group)
        self._projected_update(p, state["projector"].t() @ grad, group)

    def _refresh(self, p: torch.nn.Parameter, grad: torch.Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        """New projector from the SVD of the (deflated) gradient; the same SVD feeds the sketch."""
        rank, sketch_rank = group["proj_rank"], group["sketch_rank"]
        # ℓ+1 values are needed for the sketch's shrink, r vectors for the projector.
        u, s = top_singular(grad, max(rank, sketch_rank + 1), group["svd"], group["svd_oversample"], group["svd_power_iters"])
        proj = u[:, :rank].contiguous()
        if group["align_signs"]:
            proj = proj * self._alignment(state.get("projector"), proj)
        state["projector"] = proj
        fd = FrequentDirections(p.shape[0], sketch_rank, group["sketch_decay"], device=grad.device)
        if "sketch_basis" in state:
            fd.load_tensors(state["sketch_basis"], state["sketch_sigma"], state["sketch_shrinkage"])
        fd.update_from_svd(u, s)
        state["sketch_basis"], state["sketch_sigma"], state["sketch_shrinkage"] = fd.tensors()

    @staticmethod
    def _alignment(previous: torch.Tensor | None, proj: torch.Tensor) -> torch.Tensor:
        """±1 per projector column so that each agrees in sign with the previous projector's column.

        An SVD returns each singular vector with an arbitrary sign (a randomized one, a new sign
        every step); since Adam's moments are not rotated with P, a flipped column flips the sign
        of that direction's momentum. Opt-in for the full SVD, whose official code does not align.
        """
        if previous is None or previous.shape != proj.shape:
            return torch.ones(proj.shape[-1], dtype=proj.dtype, device=proj.device)
        signs = torch.sign((previous * proj).sum(dim=0))
        return torch.where(signs == 0, torch.ones_like(signs), signs)

    # ---- the randomized refresh, batched over layers of one shape --------------------------------
    def _randomized_group_step(self, params: list[torch.nn.Parameter], group: dict[str, Any]) -> None:
        """Refresh every due layer of the group (stacked by shape and warm/cold start), then update all."""
        buckets: dict[tuple[Any, ...], list[torch.nn.Parameter]] = {}
        for p in params:
            state = self.state[p]
            if self._needs_refresh(state, group):
                warm = group["svd_warm_start"] and "range_test" in state
                buckets.setdefault((tuple(p.shape), p.device, warm), []).append(p)
            else:
                grad = deflate(p.grad.float(), self._history.get(p))  # type: ignore[union-attr]
                self._projected_update(p, state["projector"].t() @ grad, group)
        for (shape, device, warm), layers in buckets.items():
            stack = self._stack(layers, shape, device)
            step = self.state[layers[0]]["step"]
            generator = None if warm else torch.Generator(device=device).manual_seed(COLD_START_SEED + step)
            start = torch.stack([self.state[p]["range_test"] for p in layers]) if warm else None
            name = group["svd_sketch_dtype"]
            sketch_dtype = fast_sketch_dtype(device) if name == "auto" else getattr(torch, name)
            found = randomized_svd(stack, max(group["proj_rank"], group["sketch_rank"] + 1), group["svd_oversample"],
                                   group["svd_warm_power_iters"] if warm else group["svd_power_iters"], start, generator,
                                   sketch_dtype, [self._history.get(p) for p in layers])
            projected = self._set_projectors(layers, found, group)
            self._feed_sketches(layers, found, group)
            for i, p in enumerate(layers):
                self.state[p]["range_test"] = found.next_test[i].clone()
                self._projected_update(p, projected[i], group)

    def _stack(self, layers: list[torch.nn.Parameter], shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        """The layers' deflated fp32 gradients written into a reused ``[L, m, n]`` workspace."""
        key = (shape, len(layers), device)
        stack = self._stacks.get(key)
        if stack is None:
            stack = self._stacks[key] = torch.empty(len(layers), *shape, device=device, dtype=torch.float32)
        for i, p in enumerate(layers):
            grad, history = p.grad, self._history.get(p)
            if history is None:
                stack[i].copy_(grad)  # type: ignore[arg-type]
            else:  # G − M (Mᵀ G), written straight into the workspace
                torch.addmm(grad.float(), history, history.t() @ grad.float(), alpha=-1.0, out=stack[i])  # type: ignore[union-attr]
        return stack

    def _set_projectors(self, layers: list[torch.nn.Parameter], found: RangeSVD, group: dict[str, Any]) -> torch.Tensor:
        """``P = U[:, :r]`` per layer, sign-aligned with the previous projector; returns ``R = Pᵀ G`` per layer."""
        rank = min(group["proj_rank"], found.u.shape[-1])
        projected = found.projected(rank)
        for i, p in enumerate(layers):
            state = self.state[p]
            proj = found.u[i, :, :rank]
            signs = self._alignment(state.get("projector"), proj)
            state["projector"] = (proj * signs).contiguous()
            projected[i].mul_(signs.unsqueeze(1))
        return projected

    def _feed_sketches(self, layers: list[torch.nn.Parameter], found: RangeSVD, group: dict[str, Any]) -> None:
        """Feed each layer's sketch with its block ``U_ℓ diag(sqrt(σ² − σ_{ℓ+1}²))``; merges batched when they can be."""
        sketch_rank, decay = group["sketch_rank"], group["sketch_decay"]
        values = found.sigma[:, : sketch_rank + 1]
        block_sigma, block_delta = shrink(values, min(sketch_rank, values.shape[-1]))
        block_u = found.u[:, :, : block_sigma.shape[-1]]
        states = [self.state[p] for p in layers]
        widths = {s["sketch_sigma"].shape[0] if "sketch_basis" in s else -1 for s in states}
        m = block_u.shape[1]
        if widths == {-1}:
            for i, state in enumerate(states):
                state["sketch_basis"], state["sketch_sigma"] = block_u[i].clone(), block_sigma[i].clone()
                state["sketch_shrinkage"] = block_delta[i].clone()
            return
        if len(widths) == 1 and -1 not in widths and widths.pop() + block_u.shape[-1] <= m:
            basis, sigma, delta = merge_batch(torch.stack([s["sketch_basis"] for s in states]),
                                              torch.stack([s["sketch_sigma"] for s in states]), block_u, block_sigma, decay, sketch_rank)
            for i, state in enumerate(states):
                state["sketch_basis"], state["sketch_sigma"] = basis[i].clone(), sigma[i].clone()
                state["sketch_shrinkage"] = state["sketch_shrinkage"] + block_delta[i] + delta[i]
            return
        for i, (p, state) in enumerate(zip(layers, states)):  # the exact QR + SVD merge, one layer at a time
            fd = FrequentDirections(p.shape[0], sketch_rank, decay, device=block_u.device)
            if "sketch_basis" in state:
                fd.load_tensors(state["sketch_basis"], state["sketch_sigma"], state["sketch_shrinkage"])
            fd.update_from_svd(found.u[i, :, : values.shape[-1]], values[i])
            state["sketch_basis"], state["sketch_sigma"], state["sketch_shrinkage"] = fd.tensors()

    def state_size(self, param: torch.nn.Parameter) -> dict[str, tuple[int, ...]]:
        """Shapes of the tensors held for ``param`` (to check moments are r × n, not m × n)."""
        return {k: tuple(v.shape) for k, v in self.state.get(param, {}).items() if torch.is_tensor(v)}
