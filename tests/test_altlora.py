"""AltLoRA's optimizer against readable references: the least-squares projections, reductions to a
full-gradient step and to EMA momentum, transformation invariance (and its loss under AltLoRA+ and
AdamW), the released stale-gradient order, init safety, the documented quirks' flags and exact
resume."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.nn import functional as F

from clbench.nn import LoRALinear
from clbench.strategies.altlora import AltLoRAConfig, AltLoRAOptimizer
from clbench.strategies.altlora.optimizer import active_factors

torch.set_default_dtype(torch.float32)


def _problem(m: int = 6, n: int = 5, batch: int = 12, steps: int = 5, seed: int = 0) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
    """A frozen base weight and ``steps`` regression batches (fp64)."""
    gen = torch.Generator().manual_seed(seed)
    w0 = torch.randn(m, n, generator=gen, dtype=torch.float64)
    batches = [(torch.randn(batch, n, generator=gen, dtype=torch.float64), torch.randn(batch, m, generator=gen, dtype=torch.float64))
               for _ in range(steps)]
    return w0, batches


def _loss(w: torch.Tensor, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = batch
    return F.mse_loss(x @ w.t(), y)


def _full_gradient(w: torch.Tensor, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """G = ∂L/∂W from a reference full-weight autograd pass."""
    w = w.detach().clone().requires_grad_(True)
    _loss(w, batch).backward()
    return w.grad  # type: ignore[return-value]


def _factor_grads(w0: torch.Tensor, a: torch.Tensor, b: torch.Tensor, s: float, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    a.grad = b.grad = None
    _loss(w0 + s * b @ a, batch).backward()


def _optimizer(a: torch.nn.Parameter, b: torch.nn.Parameter, s: float, lr: float, **options: object) -> AltLoRAOptimizer:
    group = {"params": [a, b], "altlora": True, "scaling": s}
    group.update({k: v for k, v in options.items() if k not in ("betas", "weight_decay", "reg", "eps")})
    return AltLoRAOptimizer([group], lr=lr, betas=options.get("betas", (0.9, 0.999)), eps=options.get("eps", 1e-4),  # type: ignore[arg-type]
                            weight_decay=options.get("weight_decay", 0.0), reg=options.get("reg", 0.0))  # type: ignore[arg-type]


def _run(w0: torch.Tensor, a0: torch.Tensor, b0: torch.Tensor, s: float, batches: list, lr: float, **options: object) -> list[torch.Tensor]:
    """W after each AltLoRA step."""
    a, b = torch.nn.Parameter(a0.clone()), torch.nn.Parameter(b0.clone())
    opt = _optimizer(a, b, s, lr, **options)
    trajectory = []
    for batch in batches:
        _factor_grads(w0, a, b, s, batch)
        opt.step()
        trajectory.append((w0 + s * b @ a).detach().clone())
    return trajectory


def reference_altlora(w0: torch.Tensor, a: torch.Tensor, b: torch.Tensor, s: float, batches: list, lr: float, beta1: float,
                      wd: float, reg: float) -> list[torch.Tensor]:
    """The released ``altlora`` step written out plainly (one backward per step, A then B)."""
    r, n, m = a.shape[0], a.shape[1], b.shape[0]
    m_a, m_b = torch.zeros(r, n, dtype=a.dtype), torch.zeros(m, r, dtype=a.dtype)
    b_prev, a_prev = torch.zeros(m, r, dtype=a.dtype), torch.zeros(r, n, dtype=a.dtype)
    eye = torch.eye(r, dtype=a.dtype)
    out = []
    for k, batch in enumerate(batches, start=1):
        g = _full_gradient(w0 + s * b @ a, batch)
        grad_a, grad_b = s * b.t() @ g, s * g @ a.t()  # both at (A_t, B_t)
        p = torch.linalg.inv(b.t() @ b + reg * eye)
        m_a = beta1 * (p @ b.t() @ b_prev) @ m_a + (1 - beta1) * (p @ grad_a)
        b_prev = b.clone()
        a = a - lr / (1 - beta1**k) * m_a
        a = a - lr * wd * a
        q = torch.linalg.inv(a @ a.t() + reg * eye)
        m_b = beta1 * m_b @ (a_prev @ a.t() @ q) + (1 - beta1) * (grad_b @ q)
        a_prev = a.clone()
        b = b - lr / (1 - beta1**k) * m_b
        b = b - lr * wd * b
        out.append(w0 + s * b @ a)
    return out


def test_steps_agree_with_the_readable_reference() -> None:
    w0, batches = _problem(steps=6)
    gen = torch.Generator().manual_seed(1)
    a0, b0 = torch.randn(3, 5, generator=gen, dtype=torch.float64), torch.randn(6, 3, generator=gen, dtype=torch.float64)
    got = _run(w0, a0, b0, 2.0, batches, lr=0.05, betas=(0.9, 0.999), weight_decay=0.01, reg=1e-3)
    expected = reference_altlora(w0, a0, b0, 2.0, batches, lr=0.05, beta1=0.9, wd=0.01, reg=1e-3)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-10)


def test_half_steps_are_the_least_squares_projections_of_the_full_gradient() -> None:
    w0, batches = _problem(m=7, n=5, steps=1)
    gen = torch.Generator().manual_seed(2)
    s, lr, r = 2.0, 0.1, 3
    a0, b0 = torch.randn(r, 5, generator=gen, dtype=torch.float64), torch.randn(7, r, generator=gen, dtype=torch.float64)
    g = _full_gradient(w0 + s * b0 @ a0, batches[0])
    for half in ("A", "B"):
        a, b = torch.nn.Parameter(a0.clone()), torch.nn.Parameter(b0.clone())
        opt = _optimizer(a, b, s, lr, betas=(0.0, 0.999), inv_s2_scaling=True)
        _factor_grads(w0, a, b, s, batches[0])
        if half == "A":
            b.grad = None
        else:
            a.grad = None
        opt.step()
        delta_w = s * b.detach() @ a.detach() - s * b0 @ a0
        if half == "A":  # −η · P_col(B) · G
            expected = -lr * b0 @ torch.linalg.inv(b0.t() @ b0) @ b0.t() @ g
        else:  # −η · G · P_row(A)
            expected = -lr * g @ a0.t() @ torch.linalg.inv(a0 @ a0.t()) @ a0
        torch.testing.assert_close(delta_w, expected, rtol=0, atol=1e-10)
        assert float(delta_w.abs().max()) > 1e-3


def test_full_rank_b_step_equals_a_full_fine_tuning_sgd_step() -> None:
    m = n = 4
    w0, batches = _problem(m=m, n=n, steps=1)
    gen = torch.Generator().manual_seed(3)
    s, lr = 2.0, 0.05
    a0 = torch.randn(m, n, generator=gen, dtype=torch.float64)
    b0 = torch.randn(m, m, generator=gen, dtype=torch.float64) + 3 * torch.eye(m, dtype=torch.float64)
    a, b = torch.nn.Parameter(a0.clone()), torch.nn.Parameter(b0.clone())
    opt = _optimizer(a, b, s, lr, betas=(0.0, 0.999), inv_s2_scaling=True)
    _factor_grads(w0, a, b, s, batches[0])
    b.grad = None
    opt.step()
    w_before = w0 + s * b0 @ a0
    sgd = w_before - lr * _full_gradient(w_before, batches[0])
    torch.testing.assert_close(w0 + s * b0 @ a.detach(), sgd, rtol=0, atol=1e-10)


def test_with_b_frozen_and_orthonormal_the_a_step_is_ema_momentum_sgd() -> None:
    w0, batches = _problem(m=6, n=5, steps=7)
    gen = torch.Generator().manual_seed(4)
    s, lr, beta1 = 1.5, 0.05, 0.9
    b0, _ = torch.linalg.qr(torch.randn(6, 3, generator=gen, dtype=torch.float64))  # BᵀB = I
    a0 = torch.randn(3, 5, generator=gen, dtype=torch.float64)
    a, b = torch.nn.Parameter(a0.clone()), torch.nn.Parameter(b0.clone())
    opt = _optimizer(a, b, s, lr, betas=(beta1, 0.999))
    ref_a, mom = a0.clone(), torch.zeros_like(a0)
    for k, batch in enumerate(batches, start=1):
        _factor_grads(w0, a, b, s, batch)
        b.grad = None  # B frozen: B_prev = B, so the transport is (BᵀB)⁻¹BᵀB = I
        g = s * b0.t() @ _full_gradient(w0 + s * b0 @ ref_a, batch)
        opt.step()
        mom = beta1 * mom + (1 - beta1) * g
        ref_a = ref_a - lr / (1 - beta1**k) * mom
        torch.testing.assert_close(a.detach(), ref_a, rtol=0, atol=1e-10)
    assert torch.equal(b.detach(), b0)


def _invariance_runs(variant: str) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    w0, batches = _problem(m=8, n=6, steps=5, seed=5)
    gen = torch.Generator().manual_seed(6)
    r = 3
    a0, b0 = torch.randn(r, 6, generator=gen, dtype=torch.float64), torch.randn(8, r, generator=gen, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(r, r, generator=gen, dtype=torch.float64))
    rot = q @ torch.diag(torch.tensor([0.5, 1.0, 2.5], dtype=torch.float64))  # well-conditioned, not orthogonal
    options = {"betas": (0.9, 0.999), "weight_decay": 0.01, "reg": 0.0, "variant": variant}
    plain = _run(w0, a0, b0, 2.0, batches, lr=0.02, **options)
    rotated = _run(w0, rot @ a0, b0 @ torch.linalg.inv(rot), 2.0, batches, lr=0.02, **options)
    return plain, rotated


def test_w_trajectory_is_invariant_to_reparameterising_the_factors() -> None:
    plain, rotated = _invariance_runs("altlora")
    for p, q in zip(plain, rotated, strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-10)
    assert not torch.allclose(plain[0], plain[-1])


def test_altlora_plus_and_adamw_lora_are_not_transformation_invariant() -> None:
    plain, rotated = _invariance_runs("altlora_plus")
    assert float((plain[-1] - rotated[-1]).abs().max()) > 1e-4
    w0, batches = _problem(m=8, n=6, steps=5, seed=5)
    gen = torch.Generator().manual_seed(6)
    a0, b0 = torch.randn(3, 6, generator=gen, dtype=torch.float64), torch.randn(8, 3, generator=gen, dtype=torch.float64)
    rot = torch.diag(torch.tensor([0.5, 1.0, 2.5], dtype=torch.float64))
    finals = []
    for a_init, b_init in ((a0, b0), (rot @ a0, b0 @ torch.linalg.inv(rot))):
        a, b = torch.nn.Parameter(a_init.clone()), torch.nn.Parameter(b_init.clone())
        adam = torch.optim.AdamW([a, b], lr=0.02, weight_decay=0.01)
        for batch in batches:
            _factor_grads(w0, a, b, 2.0, batch)
            adam.step()
        finals.append((w0 + 2.0 * b @ a).detach())
    assert float((finals[0] - finals[1]).abs().max()) > 1e-4


def test_b_step_uses_the_pre_update_gradient_and_the_post_update_preconditioner() -> None:
    w0, batches = _problem(m=6, n=5, steps=1)
    gen = torch.Generator().manual_seed(7)
    s, lr, reg = 2.0, 0.05, 1e-3
    a0, b0 = torch.randn(2, 5, generator=gen, dtype=torch.float64), torch.randn(6, 2, generator=gen, dtype=torch.float64)
    a, b = torch.nn.Parameter(a0.clone()), torch.nn.Parameter(b0.clone())
    opt = _optimizer(a, b, s, lr, betas=(0.0, 0.999), reg=reg)
    _factor_grads(w0, a, b, s, batches[0])
    stale = b.grad.clone()  # type: ignore[union-attr]
    opt.step()
    a_new = a.detach()
    eye = torch.eye(2, dtype=torch.float64)
    expected_b = b0 - lr * stale @ torch.linalg.inv(a_new @ a_new.t() + reg * eye)
    torch.testing.assert_close(b.detach(), expected_b, rtol=0, atol=1e-12)
    fresh_a, fresh_b = torch.nn.Parameter(a_new.clone()), torch.nn.Parameter(b0.clone())
    _factor_grads(w0, fresh_a, fresh_b, s, batches[0])
    assert not torch.allclose(fresh_b.grad, stale)  # a fresh ∇_B at A_new would differ


def test_zero_b_first_step_leaves_a_alone_and_has_no_nan() -> None:
    layer = LoRALinear(torch.nn.Linear(16, 12), rank=4, alpha=8.0)
    x, y = torch.randn(20, 16), torch.randn(20, 12)
    opt = AltLoRAOptimizer([{"params": [layer.lora_A, layer.lora_B], "altlora": True, "scaling": layer.scaling}], lr=0.01,
                           weight_decay=1e-5, reg=1e-5)
    a0 = layer.lora_A.detach().clone()
    F.mse_loss(layer(x), y).backward()
    assert float(layer.lora_A.grad.abs().max()) == 0.0  # type: ignore[union-attr]
    opt.step()
    torch.testing.assert_close(layer.lora_A.detach(), a0 * (1 - 0.01 * 1e-5), rtol=1e-6, atol=0)
    assert float(layer.lora_B.detach().abs().max()) > 0
    for _ in range(5):
        opt.zero_grad()
        F.mse_loss(layer(x), y).backward()
        opt.step()
    assert torch.isfinite(layer.lora_A).all() and torch.isfinite(layer.lora_B).all()
    assert opt.inverse_fallbacks == 0


def test_merge_reinit_keeps_the_output_and_restarts_the_adapter() -> None:
    torch.manual_seed(0)
    layer = LoRALinear(torch.nn.Linear(10, 8), rank=3, alpha=6.0)
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(4, 10)
    before = layer(x)
    layer.merge_()
    torch.testing.assert_close(layer(x), before, rtol=0, atol=1e-6)
    assert float(layer.lora_B.detach().abs().max()) == 0.0


def test_inv_s2_scaling_divides_the_step_by_s_squared() -> None:
    w0, batches = _problem(steps=1)
    gen = torch.Generator().manual_seed(8)
    a0, b0 = torch.randn(2, 5, generator=gen, dtype=torch.float64), torch.randn(6, 2, generator=gen, dtype=torch.float64)
    deltas = []
    for flag in (False, True):
        a, b = torch.nn.Parameter(a0.clone()), torch.nn.Parameter(b0.clone())
        opt = _optimizer(a, b, 2.0, 0.01, betas=(0.0, 0.999), inv_s2_scaling=flag)
        _factor_grads(w0, a, b, 2.0, batches[0])
        b.grad = None
        opt.step()
        deltas.append(a.detach() - a0)
    torch.testing.assert_close(deltas[1], deltas[0] / 4.0, rtol=1e-12, atol=0)


def test_released_optimizer_ignores_the_scheduler_unless_follow_lr_schedule() -> None:
    w0, batches = _problem(steps=3)
    gen = torch.Generator().manual_seed(9)
    a0, b0 = torch.randn(2, 5, generator=gen, dtype=torch.float64), torch.randn(6, 2, generator=gen, dtype=torch.float64)
    finals = {}
    for follow in (True, False):
        a, b = torch.nn.Parameter(a0.clone()), torch.nn.Parameter(b0.clone())
        opt = _optimizer(a, b, 2.0, 0.05, follow_lr_schedule=follow)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.0 if step else 1.0)  # lr 0 after the first step
        for batch in batches:
            _factor_grads(w0, a, b, 2.0, batch)
            opt.step()
            sched.step()
        finals[follow] = (a.detach().clone(), b.detach().clone())
    constant = _run(w0, a0, b0, 2.0, batches, lr=0.05)
    torch.testing.assert_close(2.0 * finals[False][1] @ finals[False][0] + w0, constant[-1], rtol=0, atol=1e-12)
    one_step = _run(w0, a0, b0, 2.0, batches[:1], lr=0.05)
    torch.testing.assert_close(2.0 * finals[True][1] @ finals[True][0] + w0, one_step[-1], rtol=0, atol=1e-12)


def test_altlora_plus_stores_untransported_momentum_unless_asked() -> None:
    w0, batches = _problem(steps=3)
    gen = torch.Generator().manual_seed(10)
    a0, b0 = torch.randn(2, 5, generator=gen, dtype=torch.float64), torch.randn(6, 2, generator=gen, dtype=torch.float64)
    stored = {}
    for flag in (False, True):
        a, b = torch.nn.Parameter(a0.clone()), torch.nn.Parameter(b0.clone())
        opt = _optimizer(a, b, 2.0, 0.01, variant="altlora_plus", plus_transport_stored_momentum=flag)
        grads_a = []
        for batch in batches:
            _factor_grads(w0, a, b, 2.0, batch)
            grads_a.append(a.grad.clone())  # type: ignore[union-attr]
            precond = torch.linalg.inv(b.detach().t() @ b.detach())
            grads_a[-1] = precond @ grads_a[-1]
            opt.step()
        stored[flag] = opt.state[a]["exp_avg"].clone()
        if not flag:  # as released: a plain EMA of the scaled gradients
            ema = torch.zeros_like(a0)
            for g in grads_a:
                ema = 0.9 * ema + 0.1 * g
            torch.testing.assert_close(stored[flag], ema, rtol=0, atol=1e-12)
    assert not torch.allclose(stored[False], stored[True])


def test_block_alternation_schedule() -> None:
    schedule = [active_factors(t, "blocks", 3) for t in range(12)]
    assert schedule[:3] == [(True, True)] * 3
    assert schedule[3:6] == [(True, False)] * 3 and schedule[6:9] == [(False, True)] * 3 and schedule[9:12] == [(True, False)] * 3
    assert all(active_factors(t, "both", 3) == (True, True) for t in range(12))


def test_optimizer_state_saves_and_resumes_exactly() -> None:
    torch.manual_seed(11)
    layer = LoRALinear(torch.nn.Linear(12, 9), rank=3, alpha=6.0)
    head = torch.nn.Linear(9, 4)
    data = [(torch.randn(8, 12), torch.randint(0, 4, (8,))) for _ in range(8)]

    def build(lyr: LoRALinear, hd: torch.nn.Linear, variant: str) -> AltLoRAOptimizer:
        return AltLoRAOptimizer([{"params": [lyr.lora_A, lyr.lora_B], "altlora": True, "scaling": lyr.scaling, "variant": variant},
                                 {"params": list(hd.parameters())}], lr=0.02, weight_decay=0.01, reg=1e-4)

    def run(opt: AltLoRAOptimizer, lyr: LoRALinear, hd: torch.nn.Linear, steps: range) -> None:
        for i in steps:
            opt.zero_grad()
            F.cross_entropy(hd(lyr(data[i][0])), data[i][1]).backward()
            opt.step()

    for variant in ("altlora", "altlora_plus"):
        lyr, hd = copy.deepcopy(layer), copy.deepcopy(head)
        opt = build(lyr, hd, variant)
        run(opt, lyr, hd, range(4))
        saved_opt, saved_lyr, saved_hd = copy.deepcopy(opt.state_dict()), copy.deepcopy(lyr), copy.deepcopy(hd)
        run(opt, lyr, hd, range(4, 8))
        opt2 = build(saved_lyr, saved_hd, variant)
        opt2.load_state_dict(saved_opt)
        run(opt2, saved_lyr, saved_hd, range(4, 8))
        assert torch.equal(lyr.lora_A, saved_lyr.lora_A) and torch.equal(lyr.lora_B, saved_lyr.lora_B)
        assert torch.equal(hd.weight, saved_hd.weight)


def test_bad_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match="variant"):
        AltLoRAConfig(variant="lion")
    with pytest.raises(ValueError, match="boundary"):
        AltLoRAConfig(boundary="freeze")
    with pytest.raises(ValueError, match="carry_old_factors"):
        AltLoRAConfig(boundary="merge_reinit", carry_old_factors=True)
    a, b = torch.nn.Parameter(torch.zeros(2, 3)), torch.nn.Parameter(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="A \\(r × n\\) and B"):
        AltLoRAOptimizer([{"params": [a, b], "altlora": True}])
