"""MoRA's layer against a plain-PyTorch reference: outputs, gates, gradients, bank growth.

The reference below is written from the paper's equations (dense responses, top-k, a -inf
scatter, softmax over all R with masked logits, the δ mask), independently of
:mod:`clbench.kernels`; the layer runs through ``clbench.kernels.rank_gated_lora`` on every
backend the dispatch offers on this machine (``CLBENCH_KERNELS=reference`` and ``cpu``).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from clbench.strategies.mora.layer import MoRALinear, MoRASettings, apply_mora, unwrap_mora

D_IN, D_OUT = 11, 7


@pytest.fixture(params=["reference", "cpu"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("CLBENCH_KERNELS", request.param)
    return request.param


def mora_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, a_old: torch.Tensor, b_old: torch.Tensor,
                   a_new: torch.Tensor, b_new: torch.Tensor, *, topk: int, tau: float, delta: float, scale: float, training: bool,
                   eps: float = 1e-12, couple_norm: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Paper eqs. 4-8: returns the output and the dense gate weights ``w`` (``[N, R]``).

    ``couple_norm=False`` detaches the norm (a deliberately wrong variant, used to show that the
    normalisation path carries gradient to atoms that were not selected).
    """
    a_all = torch.cat([a_old, a_new], dim=0)
    b_all = torch.cat([b_old, scale * b_new], dim=1)
    z = x @ a_all.T
    norm = z.norm(dim=-1, keepdim=True)
    s = z / (norm if couple_norm else norm.detach()).clamp_min(eps)
    k = min(max(topk, 2), a_all.shape[0])
    values, index = torch.topk(s, k, dim=-1)
    logits = torch.full_like(s, float("-inf")).scatter(-1, index, values)
    w = torch.softmax(logits / tau, dim=-1)
    if not training and delta > 0:
        w = w * (s >= delta).to(w.dtype)
    return x @ weight.T + (0 if bias is None else bias) + (w * z) @ b_all.T, w


def make_layer(*, rank: int = 3, tasks_frozen: int = 2, topk: int = 3, tau: float = 0.3, delta: float = 0.2, alpha: float | None = None,
               dropout: float = 0.0, bake: bool = False, seed: int = 0) -> MoRALinear:
    """A float64 layer whose bank holds ``tasks_frozen`` trained-looking tasks and whose current values are nonzero."""
    torch.manual_seed(seed)
    base = nn.Linear(D_IN, D_OUT).double()
    settings = MoRASettings(rank=rank, topk=topk, temperature=tau, threshold=delta, alpha=alpha if alpha is not None else float(rank),
                            dropout=dropout, bake_scaling_on_freeze=bake)
    layer = MoRALinear(base, settings)
    for _ in range(tasks_frozen):
        with torch.no_grad():
            layer.lora_B.normal_()
        layer.freeze_current_()
    with torch.no_grad():
        layer.lora_B.normal_()
    return layer


def reference_of(layer: MoRALinear, x: torch.Tensor, **overrides) -> tuple[torch.Tensor, torch.Tensor]:
    s = layer.settings
    kwargs = {"topk": s.topk, "tau": s.temperature, "delta": s.threshold, "scale": s.scaling, "training": layer.training, "eps": s.norm_eps}
    kwargs.update(overrides)
    return mora_reference(x, layer.base.weight, layer.base.bias, layer.bank_A, layer.bank_B, layer.lora_A, layer.lora_B, **kwargs)


@pytest.mark.parametrize("training", [True, False])
def test_layer_matches_plain_reference(backend: str, training: bool) -> None:
    layer = make_layer(alpha=6.0)  # scale 2 on the current atoms, as in the LLM code
    layer.train(training)
    x = torch.randn(4, 5, D_IN, dtype=torch.float64)
    expected, _ = reference_of(layer, x.reshape(-1, D_IN))
    torch.testing.assert_close(layer(x), expected.reshape(4, 5, D_OUT))


def test_delta_applies_only_at_inference_without_renormalising(backend: str) -> None:
    layer = make_layer(delta=0.25)
    x = torch.randn(64, D_IN, dtype=torch.float64)
    layer.eval()
    _, w_eval = reference_of(layer, x)
    layer.train()
    _, w_train = reference_of(layer, x)
    torch.testing.assert_close(w_train.sum(-1), torch.ones(64, dtype=torch.float64))
    pruned = w_eval.sum(-1)
    assert (pruned < 1 - 1e-9).any(), "δ should prune some kept atoms of some tokens"
    assert (pruned <= 1 + 1e-12).all()
    layer.eval()
    torch.testing.assert_close(layer(x), reference_of(layer, x)[0])


def test_full_budget_flat_softmax_equals_uniform_lora(backend: str) -> None:
    """k = R, δ = 0 and a huge τ: every atom gets weight 1/R, i.e. LoRA scaled by 1/R."""
    layer = make_layer(rank=3, tasks_frozen=2, topk=9, tau=1e9, delta=0.0, alpha=6.0)
    layer.eval()
    x = torch.randn(10, D_IN, dtype=torch.float64)
    b_all = torch.cat([layer.bank_B, layer.settings.scaling * layer.lora_B], dim=1)
    a_all = torch.cat([layer.bank_A, layer.lora_A], dim=0)
    expected = layer.base(x) + (x @ a_all.T @ b_all.T) / 9
    torch.testing.assert_close(layer(x), expected)


def test_threshold_above_one_gives_the_base_layer_at_inference(backend: str) -> None:
    layer = make_layer(delta=1.01)
    x = torch.randn(16, D_IN, dtype=torch.float64)
    layer.eval()
    torch.testing.assert_close(layer(x), layer.base(x), rtol=0, atol=0)
    layer.train()  # δ is an inference-only filter: training still uses the atoms
    assert not torch.allclose(layer(x), layer.base(x))


def test_budget_floor_of_two_atoms(backend: str) -> None:
    layer = make_layer(topk=1, tau=1.0)
    x = torch.randn(8, D_IN, dtype=torch.float64)
    _, w = reference_of(layer, x)
    assert ((w > 0).sum(-1) == 2).all()
    layer.start_usage()
    layer(x)
    usage, tokens = layer.stop_usage()
    assert tokens == 8 and usage.sum().item() == 16
    torch.testing.assert_close(usage.cpu(), (w > 0).sum(0).to(torch.float64))


def test_usage_counts_atoms_left_after_delta(backend: str) -> None:
    layer = make_layer(delta=0.3, tau=0.05)
    layer.eval()
    x = torch.randn(3, 20, D_IN, dtype=torch.float64)
    layer.start_usage()
    layer(x)
    usage, tokens = layer.stop_usage()
    _, w = reference_of(layer, x.reshape(-1, D_IN))
    assert tokens == 60
    torch.testing.assert_close(usage.cpu(), (w != 0).sum(0).to(torch.float64))


def test_current_atom_gradients_match_reference_autograd(backend: str) -> None:
    layer = make_layer(alpha=6.0, tau=0.3)
    x = torch.randn(12, D_IN, dtype=torch.float64, requires_grad=True)
    target = torch.randn(12, D_OUT, dtype=torch.float64)
    ((layer(x) - target) ** 2).sum().backward()
    got = (layer.lora_A.grad.clone(), layer.lora_B.grad.clone(), x.grad.clone())
    a = layer.lora_A.detach().clone().requires_grad_(True)
    b = layer.lora_B.detach().clone().requires_grad_(True)
    x2 = x.detach().clone().requires_grad_(True)
    s = layer.settings
    y, _ = mora_reference(x2, layer.base.weight, layer.base.bias, layer.bank_A, layer.bank_B, a, b, topk=s.topk, tau=s.temperature,
                          delta=s.threshold, scale=s.scaling, training=True)
    ((y - target) ** 2).sum().backward()
    for mine, ref in zip(got, (a.grad, b.grad, x2.grad), strict=True):
        torch.testing.assert_close(mine, ref, rtol=1e-9, atol=1e-10)
    assert layer.bank_A.grad is None and layer.base.weight.grad is None


def test_current_atom_gradients_match_finite_differences(backend: str) -> None:
    layer = make_layer(rank=3, tasks_frozen=1, topk=2, tau=0.5, alpha=6.0, seed=3)
    x = torch.randn(6, D_IN, dtype=torch.float64)
    probe = torch.randn(6, D_OUT, dtype=torch.float64)

    def loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        out = torch.func.functional_call(layer, {"lora_A": a, "lora_B": b}, (x,))
        return (out * probe).sum()

    a0, b0 = layer.lora_A.detach().clone(), layer.lora_B.detach().clone()
    assert torch.autograd.gradcheck(loss, (a0.requires_grad_(True), b0.requires_grad_(True)), eps=1e-6, atol=1e-6)


def test_normalisation_path_reaches_atoms_that_were_not_selected(backend: str) -> None:
    """An unselected current atom still gets gradient, through ‖z‖ (the dense normalisation term)."""
    layer = make_layer(rank=3, tasks_frozen=1, topk=2, tau=0.5, seed=5)
    x = torch.randn(1, D_IN, dtype=torch.float64)
    _, w = reference_of(layer, x)
    unselected = [j for j in range(3) if w[0, 3 + j] == 0]  # current atoms are ranks 3..5
    assert unselected, "seed should leave a current atom out of the top-2"
    j = unselected[0]
    (layer(x) ** 2).sum().backward()
    grad = layer.lora_A.grad[j]
    assert grad.abs().max() > 1e-8
    a = layer.lora_A.detach().clone().requires_grad_(True)
    s = layer.settings
    for couple, expect_zero in ((True, False), (False, True)):
        a.grad = None
        y, _ = mora_reference(x, layer.base.weight, layer.base.bias, layer.bank_A, layer.bank_B, a, layer.lora_B.detach(), topk=s.topk,
                              tau=s.temperature, delta=s.threshold, scale=s.scaling, training=True, couple_norm=couple)
        (y ** 2).sum().backward()
        if expect_zero:
            assert a.grad[j].abs().max() == 0  # without the norm coupling, nothing reaches it
        else:
            torch.testing.assert_close(grad, a.grad[j], rtol=1e-9, atol=1e-12)
    # and central finite differences on that atom's key agree
    eps = 1e-6
    fd = torch.zeros(D_IN, dtype=torch.float64)
    with torch.no_grad():
        for i in range(D_IN):
            saved = layer.lora_A[j, i].item()
            layer.lora_A[j, i] = saved + eps
            plus = (layer(x) ** 2).sum()
            layer.lora_A[j, i] = saved - eps
            minus = (layer(x) ** 2).sum()
            layer.lora_A[j, i] = saved
            fd[i] = (plus - minus) / (2 * eps)
    torch.testing.assert_close(grad, fd, rtol=1e-5, atol=1e-7)


def test_bank_grows_by_r_times_d_in_plus_d_out_per_task() -> None:
    layer = make_layer(rank=4, tasks_frozen=0)
    sizes = []
    for _ in range(3):
        sizes.append(layer.atom_parameters())
        current_a, current_b = layer.lora_A.detach().clone(), layer.lora_B.detach().clone()
        layer.freeze_current_()
        torch.testing.assert_close(layer.bank_A[-4:], current_a, rtol=0, atol=0)
        torch.testing.assert_close(layer.bank_B[:, -4:], current_b, rtol=0, atol=0)
        assert torch.count_nonzero(layer.lora_B) == 0 and not torch.equal(layer.lora_A, current_a)
    sizes.append(layer.atom_parameters())
    assert [b - a for a, b in zip(sizes, sizes[1:])] == [4 * (D_IN + D_OUT)] * 3
    assert layer.frozen_atoms == 12 and layer.total_atoms == 16
    assert [n for n, p in layer.named_parameters() if p.requires_grad] == ["lora_A", "lora_B"]


def test_past_atoms_do_not_change_while_training_later_tasks() -> None:
    layer = make_layer(rank=3, tasks_frozen=2, tau=0.3)
    bank = (layer.bank_A.clone(), layer.bank_B.clone())
    base = (layer.base.weight.detach().clone(), layer.base.bias.detach().clone())
    optimizer = torch.optim.AdamW([p for p in layer.parameters() if p.requires_grad], lr=1e-2)
    x = torch.randn(32, D_IN, dtype=torch.float64)
    target = torch.randn(32, D_OUT, dtype=torch.float64)
    before = layer.lora_A.detach().clone()
    for _ in range(5):
        optimizer.zero_grad()
        F.mse_loss(layer(x), target).backward()
        optimizer.step()
    assert not torch.equal(layer.lora_A, before)
    assert torch.equal(layer.bank_A, bank[0]) and torch.equal(layer.bank_B, bank[1])
    assert torch.equal(layer.base.weight, base[0]) and torch.equal(layer.base.bias, base[1])


@pytest.mark.parametrize("bake", [False, True])
def test_llm_scaling_quirk_flag(bake: bool) -> None:
    """Faithful: the bank gets B_new without alpha/r; fixed variant: with it."""
    layer = make_layer(rank=2, tasks_frozen=0, alpha=4.0, bake=bake)  # scale 2
    values = layer.lora_B.detach().clone()
    layer.freeze_current_()
    torch.testing.assert_close(layer.bank_B, values * (2.0 if bake else 1.0), rtol=0, atol=0)
    x = torch.randn(5, D_IN, dtype=torch.float64)
    torch.testing.assert_close(layer(x), reference_of(layer, x)[0])


@pytest.mark.parametrize("bake", [True, False])
def test_freezing_keeps_the_trained_function_only_when_the_scale_is_baked(bake: bool) -> None:
    """The bug the default fixes. A task trained with scale s = alpha / r = 2 on atoms keyed on
    e_0, e_1 (k = 2). Fresh atoms get zero keys: their scores are 0, they do not change ‖z‖ and
    never enter the top-2 for inputs with positive first coordinates, so the gate is the same before
    and after the freeze. The output is then unchanged iff the bank stores s · B (bake); the official
    LLM code's freeze (no bake) halves the task's update."""
    torch.manual_seed(0)
    layer = MoRALinear(nn.Linear(D_IN, D_OUT).double(), MoRASettings(rank=2, topk=2, temperature=0.3, threshold=0.0, alpha=4.0,
                                                                     dropout=0.0, bake_scaling_on_freeze=bake))
    assert MoRASettings(rank=2, topk=2, temperature=0.3, threshold=0.0, alpha=4.0, dropout=0.0).bake_scaling_on_freeze  # the default
    with torch.no_grad():
        layer.lora_A.copy_(torch.eye(D_IN, dtype=torch.float64)[:2])
        layer.lora_B.normal_()
    layer.eval()
    x = torch.rand(6, D_IN, dtype=torch.float64) + 0.1
    before = layer(x)
    layer.freeze_current_()
    with torch.no_grad():
        layer.lora_A.zero_()
    after = layer(x)
    update_before = before - layer.base(x)
    if bake:
        torch.testing.assert_close(after, before)
    else:
        torch.testing.assert_close(after - layer.base(x), update_before / 2)


def test_dropout_reaches_only_the_adapter_input() -> None:
    layer = make_layer(dropout=0.5, tau=0.3)
    x = torch.randn(9, D_IN, dtype=torch.float64)
    layer.train()
    torch.manual_seed(11)
    y = layer(x)
    torch.manual_seed(11)
    dropped = F.dropout(x, 0.5, training=True)
    assert not torch.equal(dropped, x)
    adapter_only, _ = reference_of(layer, dropped)
    expected = layer.base(x) + adapter_only - layer.base(dropped)
    torch.testing.assert_close(y, expected)
    layer.eval()
    torch.testing.assert_close(layer(x), reference_of(layer, x)[0])


def test_apply_and_unwrap_restore_the_backbone() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(D_IN, D_OUT), nn.ReLU(), nn.Linear(D_OUT, 3)).double()
    x = torch.randn(4, D_IN, dtype=torch.float64)
    before = model(x)
    settings = MoRASettings(rank=2, topk=2, temperature=0.1, threshold=0.2, alpha=2.0)
    wrapped = apply_mora(model, {"0": model[0], "2": model[2]}, settings)
    assert set(wrapped) == {"0", "2"} and isinstance(model[0], MoRALinear)
    torch.testing.assert_close(model(x), before)  # zero values: a fresh bank is the identity update
    assert unwrap_mora(model) == 2 and type(model[0]) is nn.Linear
    torch.testing.assert_close(model(x), before)


def test_settings_reject_bad_values() -> None:
    with pytest.raises(ValueError, match="temperature"):
        MoRASettings(rank=2, topk=2, temperature=0.0, threshold=0.2, alpha=2.0)
    with pytest.raises(ValueError, match="rank"):
        MoRASettings(rank=0, topk=2, temperature=0.1, threshold=0.2, alpha=2.0)
