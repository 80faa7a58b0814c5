"""Shared fixtures of the kernel tests: odd-shaped problems, every gate kind, and a comparison helper.

Outputs and gradients of a backend are compared with the readable reference run in fp64 on the
same inputs. Top-k selections are checked as a *valid* top-k of the fp64 scores (near-ties may
flip between implementations); the reference is then evaluated with the backend's selection.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from clbench.kernels import DenseGate, RankMaskGate, StaticGate, TopKMagnitudeGate, TopKSoftmaxGate, rank_gated_lora
from clbench.kernels.reference import concat_banks

# Odd sizes on purpose: M, d_in, d_out and R are not multiples of any block size.
M, D_IN, D_OUT, R_FROZEN, R_TRAIN, K = 37, 45, 61, 8, 5, 5
R = R_FROZEN + R_TRAIN


@dataclass
class Problem:
    """One call's inputs (leaf tensors) and the gate; ``grads`` names the inputs that require grad."""

    x: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor | None
    a_frozen: torch.Tensor | None
    b_frozen: torch.Tensor | None
    a_train: torch.Tensor
    b_train: torch.Tensor
    gate: object
    train_scale: float = 1.0
    grads: tuple[str, ...] = field(default=())

    def call(self, backend: str, usage: torch.Tensor | None = None) -> torch.Tensor:
        return rank_gated_lora(self.x, self.weight, self.bias, self.a_frozen, self.b_frozen, self.a_train, self.b_train,
                               self.gate, train_scale=self.train_scale, usage=usage, backend=backend)

    def leaves(self) -> dict[str, torch.Tensor]:
        out = {name: getattr(self, name) for name in self.grads if not name.startswith("gate_")}
        if "gate_weights" in self.grads:
            out["gate_weights"] = self.gate.weights
        if "gate_values" in self.grads:
            out["gate_values"] = self.gate.values
        return out


def make_problem(gate_name: str, dtype: torch.dtype = torch.float64, seed: int = 0, m: int = M, d_in: int = D_IN,
                 d_out: int = D_OUT, r_frozen: int = R_FROZEN, r_train: int = R_TRAIN, k: int = K,
                 device: str = "cpu") -> Problem:
    """A problem with continuous random inputs (never zeros) and the named gate kind."""
    gen = torch.Generator().manual_seed(seed)
    r = r_frozen + r_train

    def rand(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).to(dtype=dtype, device=device)

    x = rand(m, d_in)
    weight, bias = rand(d_out, d_in, scale=d_in ** -0.5), rand(d_out)
    a_frozen = rand(r_frozen, d_in, scale=d_in ** -0.5) if r_frozen else None
    b_frozen = rand(d_out, r_frozen) if r_frozen else None
    a_train, b_train = rand(r_train, d_in, scale=d_in ** -0.5), rand(d_out, r_train)
    grads: tuple[str, ...] = ("x", "a_train", "b_train")
    scale = 2.0
    if gate_name == "softmax":
        gate: object = TopKSoftmaxGate(k=k, temperature=0.3)
    elif gate_name == "softmax_threshold":
        gate = TopKSoftmaxGate(k=k, temperature=0.5, threshold=0.05)
    elif gate_name == "magnitude":
        gate = TopKMagnitudeGate(k=k)
        grads = ("b_train",)  # FlyLoRA: frozen random A passed as a_train without grad, x a plain input
    elif gate_name == "magnitude_bias":
        gate = TopKMagnitudeGate(k=k, bias=rand(r, scale=0.3))
        grads = ("x", "b_train")
    elif gate_name == "static":
        gate = StaticGate(rand(r).abs() + 0.1)
        grads = ("x", "a_train", "b_train", "gate_weights", "bias")
    elif gate_name == "static_sparse":
        weights = rand(r).abs() + 0.1
        weights[::3] = 0.0
        gate = StaticGate(weights)
    elif gate_name == "mask":
        mask = torch.zeros(r, dtype=dtype, device=device)
        mask[R_FROZEN - 2:] = 1.0
        gate = RankMaskGate(mask)
        grads = ("x", "a_train", "b_train", "weight")
    elif gate_name == "mask_per_token":
        gate = RankMaskGate((torch.rand(m, r, generator=gen) < 0.4).to(dtype=dtype, device=device))
    elif gate_name == "dense":
        gate = DenseGate(torch.rand(m, r, generator=gen).to(dtype=dtype, device=device))
        grads = ("x", "a_train", "b_train", "gate_values")
    else:
        raise ValueError(gate_name)
    problem = Problem(x, weight, bias, a_frozen, b_frozen, a_train, b_train, gate, scale, grads)
    for tensor in problem.leaves().values():
        tensor.requires_grad_(True)
    return problem


GATE_NAMES = ("softmax", "softmax_threshold", "magnitude", "magnitude_bias", "static", "static_sparse", "mask",
              "mask_per_token", "dense")


def scores(problem: Problem) -> torch.Tensor:
    """The fp64 routing scores whose top-k the gate takes (``[M, R]``)."""
    a, _ = concat_banks(problem.a_frozen, problem.b_frozen, problem.a_train, problem.b_train, problem.train_scale)
    z = problem.x.detach().double().reshape(-1, a.shape[1]) @ a.detach().double().t()
    gate = problem.gate
    if isinstance(gate, TopKMagnitudeGate):
        return z.abs() if gate.bias is None else (z + gate.bias.double()).abs()
    return z / z.norm(dim=1, keepdim=True)


def assert_valid_topk(selected: torch.Tensor, score: torch.Tensor, k: int, tol: float = 1e-5) -> None:
    """Every selected score is ≥ the (k+1)-th largest score minus ``tol`` and exactly k ranks are kept."""
    assert (selected.sum(dim=1) == k).all(), "every token must keep exactly k ranks"
    if k == score.shape[1]:
        return
    kth_next = score.topk(k + 1, dim=1).values[:, -1:]
    worst_selected = torch.where(selected, score, torch.full_like(score, float("inf"))).min(dim=1, keepdim=True).values
    assert (worst_selected >= kth_next - tol).all(), "selection is not a valid top-k of the scores"


def run_and_grad(problem: Problem, backend: str, usage: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor | None]]:
    """Output and gradients of ``sum(y * probe)`` for the backend (the probe is fixed and non-trivial)."""
    for leaf in problem.leaves().values():
        leaf.grad = None
    y = problem.call(backend, usage)
    probe = torch.linspace(-1.0, 1.5, y.numel(), dtype=y.dtype, device=y.device).reshape(y.shape)
    if problem.grads:
        (y * probe).sum().backward()
    return y.detach(), {name: (None if leaf.grad is None else leaf.grad.detach().clone())
                        for name, leaf in problem.leaves().items()}


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """``‖out − ref‖ / ‖ref‖`` in fp64."""
    ref = ref.double().cpu()
    return float((out.double().cpu() - ref).norm() / ref.norm().clamp_min(1e-30))
