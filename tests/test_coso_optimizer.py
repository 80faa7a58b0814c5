"""CoSO's optimizer mechanics against readable references: GaLore-style projected Adam, Frequent
Directions' error bound, output-space orthogonality to the history, state size, exact resume and
the randomized SVD's accuracy."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from clbench.strategies.coso.frequent_directions import FrequentDirections, merge_batch, shrink
from clbench.strategies.coso.optimizer import CoSOAdamW
from clbench.strategies.coso.projector import append_basis, energy_rank, randomized_svd, top_singular


def _coso(weight: torch.nn.Parameter, lr: float = 1e-2, **group: object) -> CoSOAdamW:
    return CoSOAdamW([{"params": [weight], "coso": True, **group}], lr=lr)


def _spectrum_matrix(m: int, n: int, decay: float, generator: torch.Generator, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A random m × n matrix whose singular values decay geometrically (gradient-like)."""
    u, _ = torch.linalg.qr(torch.randn(m, m, generator=generator, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=torch.float64))
    k = min(m, n)
    s = torch.tensor([decay**i for i in range(k)], dtype=torch.float64)
    return (u[:, :k] * s @ v[:, :k].t()).to(dtype)


def galore_reference_steps(w0: torch.Tensor, grads: list[torch.Tensor], rank: int, lr: float, betas: tuple[float, float], eps: float) -> torch.Tensor:
    """GaLore (m < n: left projection, scale 1, refresh every step) written out step by step."""
    w = w0.clone()
    beta1, beta2 = betas
    mom = torch.zeros(rank, w.shape[1])
    vel = torch.zeros(rank, w.shape[1])
    for t, g in enumerate(grads, start=1):
        u, _, _ = torch.linalg.svd(g, full_matrices=False)
        p = u[:, :rank]
        r = p.t() @ g
        mom = beta1 * mom + (1 - beta1) * r
        vel = beta2 * vel + (1 - beta2) * r * r
        step_size = lr * math.sqrt(1 - beta2**t) / (1 - beta1**t)
        w = w - step_size * (p @ (mom / (vel.sqrt() + eps)))
    return w


def test_empty_history_and_refresh_every_step_equals_galore_projected_adam() -> None:
    gen = torch.Generator().manual_seed(0)
    m, n, rank = 24, 40, 5  # m < n, so GaLore also projects on the left
    w0 = torch.randn(m, n, generator=gen)
    grads = [torch.randn(m, n, generator=gen) for _ in range(6)]
    weight = torch.nn.Parameter(w0.clone())
    opt = _coso(weight, lr=3e-3, proj_rank=rank, sketch_rank=8, update_gap=1)
    for g in grads:
        weight.grad = g.clone()
        opt.step()
    expected = galore_reference_steps(w0, grads, rank, 3e-3, (0.9, 0.999), 1e-6)
    torch.testing.assert_close(weight.detach(), expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(weight.detach(), w0)


def test_projector_refreshes_only_every_update_gap_steps() -> None:
    gen = torch.Generator().manual_seed(1)
    weight = torch.nn.Parameter(torch.randn(16, 20, generator=gen))
    opt = _coso(weight, proj_rank=3, sketch_rank=4, update_gap=3)
    projectors = []
    for _ in range(7):
        weight.grad = torch.randn(16, 20, generator=gen)
        opt.step()
        projectors.append(opt.projector(weight).clone())
    same = [torch.equal(projectors[i], projectors[i - 1]) for i in range(1, 7)]
    assert same == [True, True, False, True, True, False]  # refreshed at steps 0, 3, 6


def test_adam_state_lives_in_the_projected_r_by_n_space() -> None:
    m, n, rank, sketch = 48, 64, 4, 6
    weight = torch.nn.Parameter(torch.randn(m, n))
    opt = _coso(weight, proj_rank=rank, sketch_rank=sketch)
    weight.grad = torch.randn(m, n)
    opt.step()
    shapes = opt.state_size(weight)
    assert shapes["exp_avg"] == (rank, n) and shapes["exp_avg_sq"] == (rank, n)
    assert shapes["projector"] == (m, rank)
    assert shapes["sketch_basis"] == (m, sketch)
    assert (m, n) not in shapes.values()


def test_frequent_directions_meets_its_covariance_error_bound() -> None:
    gen = torch.Generator().manual_seed(2)
    m, ell = 40, 10
    a = _spectrum_matrix(m, 320, 0.9, gen, torch.float64) + 0.005 * torch.randn(m, 320, generator=gen, dtype=torch.float64)
    fd = FrequentDirections(m, ell, dtype=torch.float64)
    for block in a.split(20, dim=1):
        fd.update(block)
    s = fd.sketch
    err = a @ a.t() - s @ s.t()
    eigs = torch.linalg.eigvalsh(err)
    frob2 = float(a.pow(2).sum())
    assert s.shape == (m, ell)
    assert float(eigs.min()) >= -1e-9 * frob2          # A Aᵀ ⪰ S Sᵀ
    spectral = float(eigs.abs().max())
    assert spectral <= float(fd.shrinkage) * (1 + 1e-9) + 1e-9
    sv2 = torch.linalg.svdvals(a).pow(2)
    for k in range(ell):                               # ‖AAᵀ − SSᵀ‖₂ ≤ ‖A − A_k‖_F² / (ℓ − k)
        assert spectral <= float(sv2[k:].sum()) / (ell - k) * (1 + 1e-9)
    assert spectral <= frob2 / ell
    # The bound is not vacuous: the sketch keeps the leading direction almost exactly.
    top = torch.linalg.svd(a)[0][:, 0]
    assert float((fd.basis.t() @ top).norm()) > 0.99


def test_energy_rank_keeps_directions_strictly_below_the_threshold() -> None:
    sigma = torch.tensor([3.0, 2.0, 1.0, 0.5]).sqrt()  # energies 3, 2, 1, .5 of 6.5
    # cumulative shares .4615 .7692 .9231 1.0
    assert energy_rank(sigma, 0.98) == 3
    assert energy_rank(sigma, 0.92) == 2
    assert energy_rank(sigma, 0.4) == 0
    assert energy_rank(torch.zeros(3), 0.98) == 0


def test_updates_have_no_component_in_the_history() -> None:
    """With a history M, every update ΔW satisfies Mᵀ ΔW = 0 (output-space orthogonality)."""
    gen = torch.Generator().manual_seed(3)
    m, n = 32, 24
    history, _ = torch.linalg.qr(torch.randn(m, 10, generator=gen))
    weight = torch.nn.Parameter(torch.randn(m, n, generator=gen))
    start = weight.detach().clone()
    opt = _coso(weight, proj_rank=4, sketch_rank=6, update_gap=2)
    opt.set_history(weight, history)
    for _ in range(8):
        weight.grad = torch.randn(m, n, generator=gen)
        opt.step()
    delta = weight.detach() - start
    assert float(delta.norm()) > 1e-3
    assert float((history.t() @ delta).norm()) <= 1e-5 * float(delta.norm())
    sketch = opt.sketch(weight)
    assert float((history.t() @ sketch.basis).abs().max()) < 1e-5  # the sketch is orthogonal to M too


@pytest.mark.parametrize("svd", ["full", "randomized"])
def test_optimizer_state_saves_and_resumes_exactly(svd: str) -> None:
    gen = torch.Generator().manual_seed(4)
    m, n = 20, 12
    history, _ = torch.linalg.qr(torch.randn(m, 3, generator=gen))
    grads = [torch.randn(m, n, generator=gen) for _ in range(9)]
    head_grads = [torch.randn(5, n, generator=gen) for _ in range(9)]
    weight = torch.nn.Parameter(torch.randn(m, n, generator=gen))
    head = torch.nn.Parameter(torch.randn(5, n, generator=gen))

    def build(w: torch.nn.Parameter, h: torch.nn.Parameter) -> CoSOAdamW:
        opt = CoSOAdamW([{"params": [w], "coso": True, "proj_rank": 3, "sketch_rank": 4, "update_gap": 3, "svd": svd},
                         {"params": [h], "lr": 5e-3}], lr=1e-2, weight_decay=0.01)
        opt.set_history(w, history)
        return opt

    def run(opt: CoSOAdamW, w: torch.nn.Parameter, h: torch.nn.Parameter, steps: range) -> None:
        for i in steps:
            w.grad, h.grad = grads[i].clone(), head_grads[i].clone()
            opt.step()

    opt = build(weight, head)
    run(opt, weight, head, range(4))
    saved = copy.deepcopy(opt.state_dict())
    saved_w, saved_h = weight.detach().clone(), head.detach().clone()
    run(opt, weight, head, range(4, 9))

    weight2, head2 = torch.nn.Parameter(saved_w), torch.nn.Parameter(saved_h)
    opt2 = build(weight2, head2)
    opt2.load_state_dict(saved)
    run(opt2, weight2, head2, range(4, 9))
    assert torch.equal(weight.detach(), weight2.detach())
    assert torch.equal(head.detach(), head2.detach())
    assert torch.equal(opt.sketch(weight).sketch, opt2.sketch(weight2).sketch)


@pytest.mark.parametrize("sketch_dtype", [torch.float32, torch.bfloat16])
def test_randomized_svd_matches_the_full_svd_on_gradient_like_matrices(sketch_dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(5)
    m, n, k = 192, 160, 16
    g = _spectrum_matrix(m, n, 0.85, gen) + 1e-3 * torch.randn(m, n, generator=gen)
    u_full, s_full = top_singular(g, k, "full")
    found = randomized_svd(g.unsqueeze(0), k, 10, 2, None, torch.Generator().manual_seed(0), sketch_dtype)
    u_rand, s_rand = found.u[0, :, :k], found.sigma[0, :k]
    assert u_rand.shape == u_full.shape == (m, k)
    torch.testing.assert_close(s_rand, s_full, rtol=2e-3, atol=1e-5)
    # the projected residual ‖G − U Uᵀ G‖ is as small as the optimal (full-SVD) one
    optimal = float((g - u_full @ (u_full.t() @ g)).norm())
    randomized = float((g - u_rand @ (u_rand.t() @ g)).norm())
    assert randomized <= optimal * 1.01
    # leading subspaces agree: cosines of the principal angles of the top 8 are ~1
    cosines = torch.linalg.svdvals(u_full[:, :8].t() @ u_rand[:, :8])
    assert float(cosines.min()) > 0.999


@pytest.mark.parametrize(("sketch_dtype", "tolerance"), [("float32", 1e-3), ("bfloat16", 3e-3)])
def test_randomized_svd_step_matches_the_full_svd_step(sketch_dtype: str, tolerance: float) -> None:
    """One CoSO step (moments fresh, so singular-vector signs cancel in P·N) is the same update
    with the randomized SVD as with the full SVD, up to the randomized SVD's accuracy; a bf16 range
    finder perturbs the projector's span by ~bf16 precision, so the update by a few 1e-3."""
    gen = torch.Generator().manual_seed(6)
    grad = _spectrum_matrix(96, 80, 0.75, gen) + 1e-4 * torch.randn(96, 80, generator=gen)
    deltas = {}
    for method in ("full", "randomized"):
        weight = torch.nn.Parameter(torch.zeros(96, 80))
        opt = _coso(weight, lr=1e-2, proj_rank=6, sketch_rank=8, svd=method, svd_sketch_dtype=sketch_dtype)
        weight.grad = grad.clone()
        opt.step()
        deltas[method] = weight.detach().clone()
    rel = float((deltas["randomized"] - deltas["full"]).norm() / deltas["full"].norm())
    assert float(deltas["full"].norm()) > 0
    assert rel < tolerance


def test_randomized_projector_keeps_its_column_signs_from_step_to_step() -> None:
    """svd_lowrank's vectors come with arbitrary signs; the optimizer aligns them with the
    previous projector so the (unrotated) Adam moments keep their meaning."""
    gen = torch.Generator().manual_seed(8)
    grad = _spectrum_matrix(64, 48, 0.7, gen)
    weight = torch.nn.Parameter(torch.zeros(64, 48))
    opt = _coso(weight, proj_rank=5, sketch_rank=6, svd="randomized")
    previous = None
    for seed in range(5):
        torch.manual_seed(seed)  # a different random test matrix each step
        weight.grad = grad.clone()
        opt.step()
        proj = opt.projector(weight)
        if previous is not None:
            assert bool(((previous * proj).sum(dim=0) > 0.99).all())
        previous = proj.clone()


def test_append_basis_keeps_columns_orthonormal_with_and_without_qr() -> None:
    gen = torch.Generator().manual_seed(7)
    old, _ = torch.linalg.qr(torch.randn(30, 5, generator=gen))
    new = torch.randn(30, 4, generator=gen)
    new = new - old @ (old.t() @ new)
    new, _ = torch.linalg.qr(new)
    for ortho in (False, True):
        m = append_basis(old, new + 1e-7 * torch.randn(30, 4, generator=gen), orthonormalize=ortho)
        assert m.shape == (30, 9)
        assert torch.equal(m[:, :5], old)
        torch.testing.assert_close(m.t() @ m, torch.eye(9), atol=1e-5, rtol=0)


def test_bad_groups_are_rejected() -> None:
    with pytest.raises(ValueError, match="matrices"):
        _coso(torch.nn.Parameter(torch.zeros(4)))
    with pytest.raises(ValueError, match="svd"):
        _coso(torch.nn.Parameter(torch.zeros(4, 4)), svd="qr")
    with pytest.raises(ValueError, match="svd_sketch_dtype"):
        _coso(torch.nn.Parameter(torch.zeros(4, 4)), svd="randomized", svd_sketch_dtype="float16")


@pytest.mark.gpu
def test_cuda_steps_match_the_cpu_steps() -> None:
    """On CUDA (cuSOLVER SVD) the optimizer gives the CPU result; one refresh, so column signs
    chosen by either SVD cancel in P·N."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    gen = torch.Generator().manual_seed(9)
    history, _ = torch.linalg.qr(torch.randn(64, 6, generator=gen))
    w0 = torch.randn(64, 48, generator=gen)
    grads = [torch.randn(64, 48, generator=gen) for _ in range(5)]
    results = []
    for device in ("cpu", "cuda"):
        weight = torch.nn.Parameter(w0.clone().to(device))
        opt = _coso(weight, proj_rank=5, sketch_rank=8, update_gap=100)
        opt.set_history(weight, history.to(device))
        for g in grads:
            weight.grad = g.to(device)
            opt.step()
        results.append(weight.detach().cpu())
    torch.testing.assert_close(results[1], results[0], rtol=1e-4, atol=1e-5)


def test_sign_alignment_keeps_momentum_meaningful_on_a_least_squares_problem() -> None:
    """Fitting W to a low-rank target: with T_gap = 1 the full SVD's arbitrary column signs
    scramble the unrotated moments; aligned signs (randomized always, full with align_signs)
    converge much further in the same steps."""
    gen = torch.Generator().manual_seed(6)
    target = _spectrum_matrix(64, 48, 0.7, gen)
    errors = {}
    for name, group in {"full": {}, "full-aligned": {"align_signs": True}, "randomized": {"svd": "randomized"}}.items():
        torch.manual_seed(0)
        weight = torch.nn.Parameter(torch.zeros(64, 48))
        opt = _coso(weight, lr=2e-2, proj_rank=6, sketch_rank=8, **group)
        for _ in range(60):
            weight.grad = weight.detach() - target  # gradient of ½‖W − T‖²
            opt.step()
        errors[name] = float((weight.detach() - target).norm() / target.norm())
    assert errors["full-aligned"] < 0.1 and errors["randomized"] < 0.1
    assert errors["full-aligned"] < 0.5 * errors["full"]


def _drifting_gradients(m: int, n: int, steps: int, drift: float, generator: torch.Generator) -> list[torch.Tensor]:
    """Gradient-like matrices (geometric spectrum) whose singular subspaces rotate by ``drift`` per step,
    as consecutive minibatch gradients share most of their leading subspace."""
    base = _spectrum_matrix(m, n, 0.85, generator, torch.float64)
    u, s, vt = torch.linalg.svd(base, full_matrices=False)
    out = []
    for _ in range(steps):
        a = torch.randn(m, m, generator=generator, dtype=torch.float64) * drift / m**0.5
        b = torch.randn(n, n, generator=generator, dtype=torch.float64) * drift / n**0.5
        u, vt = torch.linalg.matrix_exp(a - a.t()) @ u, vt @ torch.linalg.matrix_exp(b - b.t()).t()
        out.append(((u * s) @ vt + 1e-3 * torch.randn(m, n, generator=generator, dtype=torch.float64)).float())
    return out


def _assert_accurate(g: torch.Tensor, u: torch.Tensor, s: torch.Tensor, k: int) -> None:
    """The accuracy bar of the randomized SVD: values to 2e-3, residual within 1% of optimal, top-8 subspace."""
    u_full, s_full = top_singular(g, k, "full")
    torch.testing.assert_close(s[:k], s_full, rtol=2e-3, atol=1e-5)
    optimal = float((g - u_full @ (u_full.t() @ g)).norm())
    assert float((g - u[:, :k] @ (u[:, :k].t() @ g)).norm()) <= optimal * 1.01
    assert float(torch.linalg.svdvals(u_full[:, :8].t() @ u[:, :8]).min()) > 0.999


@pytest.mark.parametrize("sketch_dtype", [torch.float32, torch.bfloat16])
def test_warm_started_refresh_meets_the_accuracy_bar_without_power_iterations(sketch_dtype: torch.dtype) -> None:
    """Started from the previous refresh's right vectors, the range finder needs no power iteration on
    a drifting gradient sequence; a Gaussian start without iterations would miss the bar."""
    gen = torch.Generator().manual_seed(13)
    grads = _drifting_gradients(192, 160, 6, 0.05, gen)
    k = 16
    found = randomized_svd(grads[0].unsqueeze(0), k, 10, 2, None, torch.Generator().manual_seed(0), sketch_dtype)
    _assert_accurate(grads[0], found.u[0], found.sigma[0], k)
    for g in grads[1:]:
        found = randomized_svd(g.unsqueeze(0), k, 10, 0, found.next_test, sketch_dtype=sketch_dtype)
        _assert_accurate(g, found.u[0], found.sigma[0], k)
    cold = randomized_svd(grads[-1].unsqueeze(0), k, 10, 0, None, torch.Generator().manual_seed(0))
    with pytest.raises(AssertionError):
        _assert_accurate(grads[-1], cold.u[0], cold.sigma[0], k)


def test_randomized_factors_give_the_projected_gradient() -> None:
    gen = torch.Generator().manual_seed(14)
    g = _spectrum_matrix(50, 40, 0.8, gen).unsqueeze(0)
    found = randomized_svd(g, 6, 4, 1, None, torch.Generator().manual_seed(1))
    torch.testing.assert_close(found.projected(6), found.u[:, :, :6].transpose(1, 2) @ g, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(found.u.transpose(1, 2) @ found.u, torch.eye(10).unsqueeze(0), rtol=0, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_batched_sketch_merge_equals_the_qr_and_svd_merge(dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(15)
    m, ell = 64, 10
    data = torch.randn(m, 40, generator=gen, dtype=torch.float64) * torch.logspace(0, -3, 40, dtype=torch.float64)
    fd = FrequentDirections(m, ell, 0.9, dtype=torch.float64)
    fd.update(data[:, :20])
    basis, sigma, shrinkage = fd.basis.clone(), fd.sigma.clone(), float(fd.shrinkage)
    u, s, _ = torch.linalg.svd(data[:, 20:], full_matrices=False)
    block_sigma, block_delta = shrink(s[: ell + 1], ell)
    fd.update_from_svd(u[:, :ell], s[: ell + 1])
    new_basis, new_sigma, delta = merge_batch(basis[None].to(dtype), sigma[None].to(dtype), u[None, :, :ell].to(dtype),
                                              block_sigma[None].to(dtype), 0.9, ell)
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    scale = float(fd.sigma[0])
    assert float((new_sigma[0].double() - fd.sigma).abs().max()) <= tol * scale
    assert shrinkage + float(block_delta) + float(delta[0]) == pytest.approx(float(fd.shrinkage), rel=tol)
    # the same sketch S Sᵀ, with an orthonormal basis
    sketch = new_basis[0].double() * new_sigma[0].double()
    assert float((sketch @ sketch.t() - fd.sketch @ fd.sketch.t()).abs().max()) <= tol * scale**2
    assert float((new_basis[0].t() @ new_basis[0] - torch.eye(ell, dtype=dtype)).abs().max()) <= tol


def test_layers_of_one_shape_refresh_together_as_they_would_alone() -> None:
    """The randomized refresh stacks layers of a shape; each layer's steps are those it takes alone."""
    gen = torch.Generator().manual_seed(16)
    shapes = [(48, 40), (48, 40), (30, 40)]
    w0 = [torch.randn(*s, generator=gen) for s in shapes]
    grads = [[torch.randn(*s, generator=gen) for s in shapes] for _ in range(5)]
    history, _ = torch.linalg.qr(torch.randn(48, 4, generator=gen))
    group = {"coso": True, "proj_rank": 4, "sketch_rank": 6, "svd": "randomized"}
    together = [torch.nn.Parameter(w.clone()) for w in w0]
    opt = CoSOAdamW([{"params": together, **group}], lr=1e-2)
    opt.set_history(together[1], history)
    alone = [torch.nn.Parameter(w.clone()) for w in w0]
    opts = [CoSOAdamW([{"params": [w], **group}], lr=1e-2) for w in alone]
    opts[1].set_history(alone[1], history)
    for step_grads in grads:
        for w, g in zip(together, step_grads):
            w.grad = g.clone()
        opt.step()
        for o, w, g in zip(opts, alone, step_grads):
            w.grad = g.clone()
            o.step()
    for a, b in zip(together, alone):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-5, atol=1e-6)
    for a, b, o in zip(together, alone, opts):
        s_together, s_alone = opt.sketch(a).sketch, o.sketch(b).sketch
        torch.testing.assert_close(s_together @ s_together.t(), s_alone @ s_alone.t(), rtol=1e-4, atol=1e-5)
    assert float((history.t() @ (together[1].detach() - w0[1])).norm()) < 1e-5


def test_a_truncated_sketch_block_is_the_top_k_shrunk_by_the_next_value() -> None:
    """``block_rank`` k feeds ``U_k diag(sqrt(σ² − σ_{k+1}²))``; the default block is CoSO's (k = ℓ)."""
    gen = torch.Generator().manual_seed(21)
    m, ell, k = 30, 8, 3
    u = torch.linalg.qr(torch.randn(m, m, generator=gen, dtype=torch.float64))[0]
    s = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.5, 1.0, 0.8, 0.6, 0.5, 0.4], dtype=torch.float64)
    truncated = FrequentDirections(m, ell, dtype=torch.float64)
    truncated.update_from_svd(u[:, :10], s, block_rank=k)
    expected = torch.sqrt(s[:k] ** 2 - s[k] ** 2)  # by hand: sqrt(25 − 4), sqrt(16 − 4), sqrt(9 − 4)
    torch.testing.assert_close(truncated.sigma, expected)
    torch.testing.assert_close(truncated.basis, u[:, :k])
    assert float(truncated.shrinkage) == pytest.approx(4.0)
    default, explicit = FrequentDirections(m, ell, dtype=torch.float64), FrequentDirections(m, ell, dtype=torch.float64)
    default.update_from_svd(u[:, :10], s)
    explicit.update_from_svd(u[:, :10], s, block_rank=ell)
    torch.testing.assert_close(default.sigma, torch.sqrt(s[:ell] ** 2 - s[ell] ** 2))
    torch.testing.assert_close(explicit.sigma, default.sigma)
