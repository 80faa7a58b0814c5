"""CoDyRA's mechanisms against readable references: the gated forward and its gradients, the
proximal step and κ schedule (hand-computed values and a transcription of the official loop),
dropping zero ranks, the exact merge back to a plain backbone, and the drift bookkeeping."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from clbench.strategies.codyra.layer import CoDyRALinear, apply_codyra, merge_codyra, official_threshold_, soft_threshold_
from clbench.strategies.codyra import CoDyRAConfig, KappaSchedule
from clbench.strategies.codyra.telemetry import DriftTracker, module_group_and_layer, rank_grid


@pytest.fixture(params=["reference", "cpu"])
def kernel_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test through each CPU path of the shared rank-gated op."""
    monkeypatch.setenv("CLBENCH_KERNELS", request.param)
    return request.param


def _layer(d_in: int = 13, d_out: int = 7, rank: int = 5, seed: int = 0) -> CoDyRALinear:
    torch.manual_seed(seed)
    layer = CoDyRALinear(nn.Linear(d_in, d_out).double(), rank)
    with torch.no_grad():
        layer.lora_B.normal_()  # a trained-looking adapter (fresh B is zero)
    return layer


# --- layer: forward and gradients --------------------------------------------------------------

def test_fresh_adapter_is_the_base_layer_with_the_official_initialisation(kernel_backend: str) -> None:
    torch.manual_seed(1)
    base = nn.Linear(13, 7).double()
    layer = CoDyRALinear(base, rank=16)
    x = torch.randn(4, 3, 13, dtype=torch.float64)
    assert torch.equal(layer(x), base(x))  # B = 0
    assert layer.rank == 16 and layer.effective_rank() == 16
    assert not base.weight.requires_grad and not base.bias.requires_grad
    assert (layer.gate < 0).any() and (layer.gate > 0).any()  # N(0, 1), not ones
    bound = 1 / math.sqrt(13)  # Kaiming-uniform with a = sqrt(5): U(-1/sqrt(d_in), 1/sqrt(d_in))
    assert layer.lora_A.abs().max() <= bound and layer.lora_A.abs().max() > 0.5 * bound


def test_forward_and_gradients_match_lora_with_a_diagonal_gate(kernel_backend: str) -> None:
    layer = _layer()
    x = torch.randn(6, 13, dtype=torch.float64, requires_grad=True)
    A, B, w = layer.lora_A, layer.lora_B, layer.gate
    expected = x @ layer.base.weight.t() + layer.base.bias + ((x @ A.t()) * w) @ B.t()
    torch.testing.assert_close(layer(x), expected)
    upstream = torch.randn(6, 7, dtype=torch.float64)
    layer(x).backward(upstream)
    z = x.detach() @ A.detach().t()
    dz_gated = upstream @ B.detach()  # gradient w.r.t. (w ⊙ z)
    torch.testing.assert_close(w.grad, (z * dz_gated).sum(0))  # dw = Σ_tokens z ⊙ (dY B)
    torch.testing.assert_close(B.grad, upstream.t() @ (z * w.detach()))
    torch.testing.assert_close(A.grad, (dz_gated * w.detach()).t() @ x.detach())
    assert layer.base.weight.grad is None


def test_half_precision_base_keeps_float32_adapters() -> None:
    torch.manual_seed(0)
    layer = CoDyRALinear(nn.Linear(8, 4).to(torch.bfloat16), rank=4)
    assert layer.gate.dtype == layer.lora_A.dtype == torch.float32
    y = layer(torch.randn(3, 8, dtype=torch.bfloat16))
    assert y.dtype == torch.bfloat16
    layer.prox_(0.005)  # resolvable in float32 (bf16 rounds 1 - 0.005 back to 1)
    assert layer.gate.dtype == torch.float32


# --- proximal step and schedule ---------------------------------------------------------------

def test_soft_threshold_hand_values() -> None:
    w = torch.tensor([1.0, -0.3, 0.004, -0.004, 0.0, 0.006, -0.0075, 0.005], dtype=torch.float64)
    soft_threshold_(w, 0.005)
    torch.testing.assert_close(w, torch.tensor([0.995, -0.295, 0.0, 0.0, 0.0, 0.001, -0.0025, 0.0], dtype=torch.float64))


def test_official_threshold_also_zeroes_the_band_between_kappa_and_two_kappa() -> None:
    w = torch.tensor([1.0, -0.3, 0.004, 0.006, -0.0075, 0.011], dtype=torch.float64)
    official_threshold_(w, 0.005)
    torch.testing.assert_close(w, torch.tensor([0.995, -0.295, 0.0, 0.0, 0.0, 0.006], dtype=torch.float64))


def test_official_three_masks_by_hand_at_kappa_one() -> None:
    """κ = 1, mask by mask (the official loop's order):
    w          = [ 3.0, -2.5,  1.5, -1.2,  0.5, -0.9,  1.0, 0.0]
    w > 1: −1  → [ 2.0, -2.5,  0.5, -1.2,  0.5, -0.9,  1.0, 0.0]
    w < −1: +1 → [ 2.0, -1.5,  0.5, -0.2,  0.5, -0.9,  1.0, 0.0]
    |w| < 1: 0 → [ 2.0, -1.5,  0.0,  0.0,  0.0,  0.0,  1.0, 0.0]
    The soft threshold keeps 1.5 → 0.5 and -1.2 → -0.2 instead, and maps 1.0 to 0."""
    w = torch.tensor([3.0, -2.5, 1.5, -1.2, 0.5, -0.9, 1.0, 0.0], dtype=torch.float64)
    layer = _layer(rank=8)
    layer.gate.data.copy_(w)
    layer.prox_(1.0)  # the default rule is the official one
    torch.testing.assert_close(layer.gate.detach(), torch.tensor([2.0, -1.5, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0], dtype=torch.float64))
    soft = soft_threshold_(w.clone(), 1.0)
    torch.testing.assert_close(soft, torch.tensor([2.0, -1.5, 0.5, -0.2, 0.0, 0.0, 0.0, 0.0], dtype=torch.float64))


def test_prox_leaves_gradients_alone_and_rejects_unknown_rules() -> None:
    layer = _layer()
    layer(torch.randn(2, 13, dtype=torch.float64)).sum().backward()
    grad = layer.gate.grad.clone()
    before = layer.gate.detach().clone()
    layer.prox_(0.1, "soft")
    torch.testing.assert_close(layer.gate.detach(), torch.sign(before) * (before.abs() - 0.1).clamp_min(0))
    torch.testing.assert_close(layer.gate.grad, grad)
    with pytest.raises(ValueError, match="prox rule"):
        layer.prox_(0.1, "hard")


def _official_loop(total: int, kappa_max: float = 0.005, levels: int = 50, dense_fraction: float = 0.5) -> list[float | None]:
    """The official ``train_model`` schedule, transcribed loop for loop: κ after each step, or None."""
    lambdas = np.linspace(0, kappa_max, levels)
    threshold_id, threshold = 0, lambdas[0]
    dense = dense_fraction * total
    interval = int((total - dense) // levels)
    out: list[float | None] = []
    for iteration in range(total):
        if interval > 0 and iteration >= dense and iteration % interval == 0:
            threshold_id += 1
            threshold = lambdas[min(levels - 1, threshold_id)]
        out.append(float(threshold) if iteration > dense else None)
    return out


def test_schedule_hand_values_for_the_paper_setting() -> None:
    s = KappaSchedule(500)
    assert s.dense_steps == 250 and s.interval == 5 and s.effective_levels == 50
    assert [s.applies(i) for i in (0, 249, 250, 251, 499)] == [False, False, False, True, True]
    step = 0.005 / 49
    for i, level in {250: 1, 251: 1, 254: 1, 255: 2, 259: 2, 260: 3, 489: 48, 490: 49, 495: 49, 499: 49}.items():
        assert s.kappa(i) == pytest.approx(level * step), i
    assert s.kappa(249) == 0.0
    # levels 1 (steps 251-254), 2..48 (5 steps each), 49 (steps 490-499): 4 + 5·1175 + 490 = 6369
    assert s.total_shrinkage() == pytest.approx(6369 * step)


@pytest.mark.parametrize("total", [500, 1000, 210, 333, 101, 150, 120])
def test_schedule_equals_the_official_loop(total: int) -> None:
    s = KappaSchedule(total)
    ours = [s.kappa(i) if s.applies(i) else None for i in range(total)]
    official = _official_loop(total)
    assert [v is None for v in ours] == [v is None for v in official]
    np.testing.assert_allclose([v for v in ours if v is not None], [v for v in official if v is not None], rtol=1e-12, atol=0)


def test_short_tasks_ramp_one_level_per_step_and_rescale_to_the_paper_shrinkage() -> None:
    s = KappaSchedule(12)  # 6 sparse steps < 50 levels: the official loop would never leave κ = 0
    assert all(v in (None, 0.0) for v in _official_loop(12))
    assert s.effective_levels == 6 and s.interval == 1
    assert [s.level(i) for i in range(12)] == [0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 5]
    assert [i for i in range(12) if s.applies(i)] == [7, 8, 9, 10, 11]
    assert s.total_shrinkage() == pytest.approx(0.005 * (2 + 3 + 4 + 5 + 5) / 5)
    scaled = s.rescaled(500)
    assert scaled.total_shrinkage() == pytest.approx(KappaSchedule(500).total_shrinkage())
    assert KappaSchedule(500).rescaled(500) == KappaSchedule(500)


def test_config_defaults_follow_the_official_runner() -> None:
    config = CoDyRAConfig()
    assert (config.rank, config.kappa_max, config.dense_fraction, config.kappa_levels, config.prox) == (16, 0.005, 0.5, 50, "official")
    assert config.kappa_reference_steps == 0  # the official κ_max as is, on every backbone kind
    clip = config.train_overrides("clip")
    assert clip | {"epochs": None, "grad_accum": None, "max_grad_norm": None, "amp": None} == {
        "iterations": 500, "batch_size": 64, "lr": 5e-4, "optimizer": "adamw", "betas": (0.9, 0.9999), "weight_decay": 0.0,
        "scheduler": "cosine", "epochs": None, "grad_accum": None, "max_grad_norm": None, "amp": None, "nonfinite_loss": None}
    assert CoDyRAConfig(lr=1e-3).train_overrides("clip")["lr"] == 1e-3  # -S wins
    assert all(v is None for v in config.train_overrides("llm").values())  # the benchmark's settings
    with pytest.raises(ValueError, match="kappa_reference_steps"):
        CoDyRAConfig(kappa_reference_steps=-1)
    with pytest.raises(ValueError, match="prox"):
        CoDyRAConfig(prox="hard")


# --- task boundary: prune, merge, plain model -------------------------------------------------

def test_zero_ranks_are_dropped_without_changing_the_output(kernel_backend: str) -> None:
    layer = _layer(rank=6)
    with torch.no_grad():
        layer.gate[[1, 4]] = 0.0
    x = torch.randn(5, 13, dtype=torch.float64)
    before = layer(x)
    kept_a = layer.lora_A.detach()[[0, 2, 3, 5]].clone()
    assert layer.effective_rank() == 4
    assert layer.prune_zero_ranks_() == 4
    assert layer.lora_A.shape == (4, 13) and layer.lora_B.shape == (7, 4) and layer.gate.shape == (4,)
    assert torch.equal(layer.lora_A.detach(), kept_a) and layer.gate.requires_grad
    torch.testing.assert_close(layer(x), before)


class _Block(nn.Module):
    """A tiny transformer-style block: the module types CoDyRA must leave untouched."""

    def __init__(self) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(12)
        self.q_proj, self.v_proj = nn.Linear(12, 12), nn.Linear(12, 12, bias=False)
        self.mlp = nn.Sequential(nn.Linear(12, 24), nn.GELU(), nn.Linear(24, 12))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln(x)
        return x + self.q_proj(h) * torch.sigmoid(self.v_proj(h)) + self.mlp(h)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(_Block(), _Block())


def test_merge_restores_the_original_module_types_parameter_count_and_outputs(kernel_backend: str) -> None:
    model = _model()
    types = [(n, type(m)) for n, m in model.named_modules()]
    count = sum(p.numel() for p in model.parameters())
    names = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    adapters = apply_codyra(model, names, rank=4)
    assert sum(p.numel() for p in model.parameters()) > count
    with torch.no_grad():
        for i, adapter in enumerate(adapters.values()):
            adapter.lora_B.normal_(std=0.5)
            adapter.gate[i % 4] = 0.0  # one rank per module reached zero
    x = torch.randn(3, 5, 12)
    with torch.no_grad():
        before = model(x)
        deltas = {n: float(a.delta_weight().norm()) for n, a in adapters.items()}
    merged = merge_codyra(model, adapters)
    assert [(n, type(m)) for n, m in model.named_modules()] == types
    assert sum(p.numel() for p in model.parameters()) == count
    assert not any(isinstance(m, CoDyRALinear) for m in model.modules())
    with torch.no_grad():
        after = model(x)
    assert (before - after).abs().max() < 1e-5
    assert not torch.equal(before, _model()(x))  # the update is really in the weights
    assert all(m.kept_rank == 3 for m in merged.values())
    assert {n: m.delta_fro for n, m in merged.items()} == pytest.approx(deltas)


def test_drift_tracker_equals_the_dense_difference_to_the_pretrained_weights() -> None:
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 6))
    w0 = {n: m.weight.detach().clone() for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    tracker = DriftTracker()
    for task in range(3):
        adapters = apply_codyra(model, {n: model.get_submodule(n) for n in w0}, rank=5)
        with torch.no_grad():
            for adapter in adapters.values():
                adapter.lora_B.normal_()
                adapter.gate[task] = 0.0
        merged = merge_codyra(model, adapters)
        for name, update in merged.items():
            tracker.add(name, update)
            weight = model.get_submodule(name).weight.detach()
            assert tracker.cumulative_fro(name) == pytest.approx(float((weight - w0[name]).norm()), rel=1e-5)
    assert tracker.stored_ranks() == 2 * 3 * 4
    restored = DriftTracker()
    restored.load_state_dict(tracker.state_dict())
    assert restored.cumulative_fro("0") == tracker.cumulative_fro("0")


def test_module_names_split_into_groups_and_layers() -> None:
    assert module_group_and_layer("visual.transformer.resblocks.3.attn.q_proj") == ("visual.transformer.resblocks.*.attn.q_proj", 3)
    assert module_group_and_layer("model.layers.11.self_attn.o_proj") == ("model.layers.*.self_attn.o_proj", 11)
    assert module_group_and_layer("fc2") == ("fc*", 2)
    assert module_group_and_layer("head") == ("head", None)
    grid = rank_grid({"b.0.q": 3, "b.0.v": 1, "b.1.q": 16, "head": 2})
    assert grid == {"rows": ["b.*.q", "b.*.v", "head"], "columns": [0, 1, None], "matrix": [[3, 16, None], [1, None, None], [None, None, 2]]}
