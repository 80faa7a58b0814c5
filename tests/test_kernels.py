"""The rank-gated LoRA operation: the torch fast path against the readable reference, dispatch rules and
the MoRA gate's invariants (fp64 and fp32, odd shapes, every gate kind)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from test_kernels_support import GATE_NAMES, K, M, R, R_FROZEN, make_problem, relative_error, run_and_grad, scores, \
    assert_valid_topk

from clbench.kernels import StaticGate, TopKMagnitudeGate, TopKSoftmaxGate, rank_gated_lora, resolve_backend
from clbench.kernels import cpu as cpu_path
from clbench.kernels.cpu import CpuRankGatedLora, route, select_topk, selected_dots
from clbench.kernels.plan import plan_gate


@pytest.mark.parametrize("gate_name", GATE_NAMES)
def test_cpu_path_matches_reference_in_fp64(gate_name: str) -> None:
    problem = make_problem(gate_name)
    usage_ref = torch.zeros(R, dtype=torch.long)
    usage_cpu = torch.zeros(R, dtype=torch.long)
    y_ref, g_ref = run_and_grad(problem, "reference", usage_ref)
    y_cpu, g_cpu = run_and_grad(problem, "cpu", usage_cpu)
    torch.testing.assert_close(y_cpu, y_ref, rtol=1e-12, atol=1e-12)
    assert torch.equal(usage_cpu, usage_ref)
    assert g_ref.keys() == g_cpu.keys() and g_ref
    for name, ref in g_ref.items():
        assert ref is not None and g_cpu[name] is not None, name
        torch.testing.assert_close(g_cpu[name], ref, rtol=1e-10, atol=1e-10, msg=name)


@pytest.mark.parametrize(("gate_name", "rows"), [("softmax", M), ("magnitude_bias", M), ("static", M),
                                                  ("mask_per_token", M), ("softmax", 300), ("softmax_threshold", 300),
                                                  ("magnitude_bias", 300)])
def test_cpu_path_matches_reference_in_fp32(gate_name: str, rows: int) -> None:
    """300 rows take the packed top-k selection (fp32, >= 256 rows); 37 rows take torch.topk."""
    problem64 = make_problem(gate_name, dtype=torch.float64, seed=3, m=rows)
    problem32 = make_problem(gate_name, dtype=torch.float32, seed=3, m=rows)
    y_ref, g_ref = run_and_grad(problem64, "reference")
    y_cpu, g_cpu = run_and_grad(problem32, "cpu")
    plan = plan_gate(problem32.gate, R, y_cpu.shape[0])
    if plan is not None and plan.k:
        # fp32 may flip near-ties: check the selection is a valid top-k, then the numbers.
        z = problem32.x.detach() @ torch.cat([problem32.a_frozen, problem32.a_train]).detach().t()
        routing = route(z, plan)
        selected = torch.zeros(z.shape, dtype=torch.bool).scatter_(1, routing.idx, True)
        assert_valid_topk(selected, scores(problem64), K)
    assert relative_error(y_cpu, y_ref) < 1e-5
    for name, ref in g_ref.items():
        assert relative_error(g_cpu[name], ref) < 1e-5, name


def test_frozen_bank_gets_no_gradient_but_takes_part_in_gating() -> None:
    problem = make_problem("softmax")
    problem.a_frozen.requires_grad_(True)
    problem.b_frozen.requires_grad_(True)
    y = problem.call("cpu")
    y.sum().backward()
    assert problem.a_frozen.grad is None and problem.b_frozen.grad is None
    # Removing the frozen bank changes the trainable ranks' gradient: the frozen ranks shape the routing.
    grad_with = problem.a_train.grad.clone()
    problem.a_train.grad = None
    rank_gated_lora(problem.x, problem.weight, problem.bias, None, None, problem.a_train, problem.b_train,
                    problem.gate, train_scale=problem.train_scale, backend="cpu").sum().backward()
    assert not torch.allclose(grad_with, problem.a_train.grad)


def test_unselected_ranks_receive_gradient_through_the_norm() -> None:
    """The normalisation term is dense, so A_new rows that no token selected still learn."""
    problem = make_problem("softmax", m=5, r_frozen=0, r_train=13, k=2)
    y, grads = run_and_grad(problem, "cpu")
    z = problem.x.detach() @ problem.a_train.detach().t()
    never_selected = torch.ones(13, dtype=torch.bool)
    never_selected[z.topk(2, dim=1).indices.flatten()] = False
    assert never_selected.any()
    assert (grads["a_train"][never_selected].abs().sum(dim=1) > 0).all()


def test_gradcheck_of_the_fast_path() -> None:
    problem = make_problem("softmax", m=6, d_in=5, d_out=4, r_frozen=2, r_train=3, k=2, seed=1)
    plan = plan_gate(problem.gate, 5, 6)

    def fn(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return CpuRankGatedLora.apply(plan, 1.5, None, x, problem.weight, problem.bias, problem.a_frozen,
                                      problem.b_frozen, a, b, None)

    assert torch.autograd.gradcheck(fn, (problem.x, problem.a_train, problem.b_train))
    static = make_problem("static", m=5, d_in=4, d_out=3, r_frozen=1, r_train=2, seed=2)
    splan = plan_gate(static.gate, 3, 5)

    def fs(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return CpuRankGatedLora.apply(splan, 1.0, None, x, static.weight, static.bias, static.a_frozen, static.b_frozen,
                                      static.a_train, static.b_train, w)

    assert torch.autograd.gradcheck(fs, (static.x, static.gate.weights))


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_invariants_of_the_mora_gate(backend: str) -> None:
    p = make_problem("softmax", seed=4)
    base = torch.nn.functional.linear(p.x, p.weight, p.bias).detach()
    a = torch.cat([p.a_frozen, p.a_train]).detach()
    b = torch.cat([p.b_frozen, p.train_scale * p.b_train], dim=1).detach()

    def call(gate: object) -> torch.Tensor:
        return rank_gated_lora(p.x, p.weight, p.bias, p.a_frozen, p.b_frozen, p.a_train, p.b_train, gate,
                               train_scale=p.train_scale, backend=backend).detach()

    # k = R and τ → ∞: uniform weights 1/R, i.e. plain LoRA scaled by 1/R.
    uniform = base + (p.x.detach() @ a.t()) @ b.t() / R
    torch.testing.assert_close(call(TopKSoftmaxGate(k=R, temperature=1e12)), uniform, rtol=1e-9, atol=1e-9)
    # δ > 1 switches every rank off: the base layer.
    torch.testing.assert_close(call(TopKSoftmaxGate(k=K, temperature=0.3, threshold=1.01)), base, rtol=0, atol=1e-12)
    # A static all-ones gate is dense LoRA.
    torch.testing.assert_close(call(StaticGate(torch.ones(R, dtype=torch.float64))),
                               base + (p.x.detach() @ a.t()) @ b.t(), rtol=1e-10, atol=1e-10)


def test_rows_do_not_depend_on_batch_composition() -> None:
    p = make_problem("magnitude", seed=5)
    full = p.call("cpu").detach()
    part = rank_gated_lora(p.x[:7], p.weight, p.bias, p.a_frozen, p.b_frozen, p.a_train, p.b_train, p.gate,
                           train_scale=p.train_scale, backend="cpu").detach()
    torch.testing.assert_close(part, full[:7], rtol=1e-12, atol=1e-12)


def test_leading_dimensions_and_usage_dtype() -> None:
    p = make_problem("softmax", m=36)
    x3 = p.x.detach().reshape(4, 9, -1)
    usage = torch.zeros(R, dtype=torch.float32)
    y = rank_gated_lora(x3, p.weight, p.bias, p.a_frozen, p.b_frozen, p.a_train, p.b_train, p.gate, usage=usage,
                        backend="cpu")
    assert y.shape == (4, 9, p.weight.shape[0])
    assert usage.sum().item() == 36 * K


def test_unknown_gate_kind_falls_back_to_reference() -> None:
    @dataclass(frozen=True)
    class DenseValues:
        values: torch.Tensor

    from clbench.kernels import reference

    p = make_problem("softmax")
    original = reference.gate_values

    def with_dense(z: torch.Tensor, gate: object) -> torch.Tensor:
        return gate.values.to(z.dtype) if isinstance(gate, DenseValues) else original(z, gate)

    values = torch.rand(p.x.shape[0], R, dtype=torch.float64)
    reference.gate_values = with_dense
    try:
        y = rank_gated_lora(p.x, p.weight, p.bias, p.a_frozen, p.b_frozen, p.a_train, p.b_train, DenseValues(values),
                            backend="cpu")
    finally:
        reference.gate_values = original
    a = torch.cat([p.a_frozen, p.a_train]).detach()
    b = torch.cat([p.b_frozen, p.b_train], dim=1).detach()
    expected = torch.nn.functional.linear(p.x, p.weight, p.bias) + (values * (p.x @ a.t())) @ b.t()
    torch.testing.assert_close(y, expected)


def test_backend_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    x = torch.zeros(2, 3)
    assert resolve_backend(x) == "cpu"
    monkeypatch.setenv("CLBENCH_KERNELS", "reference")
    assert resolve_backend(x) == "reference"
    assert resolve_backend(x, "cpu") == "cpu"
    monkeypatch.setenv("CLBENCH_KERNELS", "fastest")
    with pytest.raises(ValueError, match="CLBENCH_KERNELS="):
        resolve_backend(x)


def test_bad_gate_shapes_are_reported() -> None:
    p = make_problem("softmax")
    with pytest.raises(ValueError, match="one value per rank"):
        p.gate = StaticGate(torch.ones(R + 1, dtype=torch.float64))
        p.call("cpu")
    with pytest.raises(ValueError, match="k >= 1"):
        TopKMagnitudeGate(k=0)
    assert R_FROZEN < R


@pytest.mark.parametrize("gate_name", ["softmax_threshold", "static", "dense"])
def test_cpu_path_in_bf16_stays_within_the_bf16_tolerance(gate_name: str) -> None:
    """bf16 operands: outputs and gradients within 1e-2 relative of fp64."""
    y_ref, g_ref = run_and_grad(make_problem(gate_name, dtype=torch.float64, seed=3), "reference")
    y_cpu, g_cpu = run_and_grad(make_problem(gate_name, dtype=torch.bfloat16, seed=3), "cpu")
    assert y_cpu.dtype == torch.bfloat16 and relative_error(y_cpu, y_ref) < 1e-2
    for name, ref in g_ref.items():
        assert relative_error(g_cpu[name], ref) < 1e-2, name


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_packed_topk_selects_exactly_what_torch_topk_selects(dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(11)
    score = (torch.randn(400, 70, generator=gen) * torch.logspace(-3, 3, 70)).to(dtype)
    score[0, :5] = torch.tensor([float("inf"), -float("inf"), -0.0, 0.0, 1e-38]).to(dtype)
    score[1] = -score[1].abs()  # an all-negative row
    for k in (1, 3, 8, 16):
        values, got = select_topk(score, k)
        assert got.shape == (400, k) and got.dtype == torch.int64
        assert torch.equal(values, score.gather(1, got))
        # Same values in the same (descending) order; the indices too where no two scores tie.
        torch.testing.assert_close(score.gather(1, got), score.topk(k, dim=1).values, rtol=0, atol=0)
        ties = score.float().sort(dim=1).values.diff(dim=1).eq(0).any(dim=1)
        assert torch.equal(got[~ties], score.topk(k, dim=1).indices[~ties])


def test_packed_topk_breaks_ties_with_exactly_k_distinct_ranks() -> None:
    score = torch.zeros(300, 20)
    score[:, 7] = 1.0
    got = select_topk(score, 5)[1]
    assert (got[:, 0] == 7).all()
    assert all(len(set(row.tolist())) == 5 for row in got)


def test_small_batches_and_fp64_use_torch_topk(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    original = torch.Tensor.topk
    monkeypatch.setattr(torch.Tensor, "topk", lambda self, *a, **kw: calls.append(self.shape) or original(self, *a, **kw))
    select_topk(torch.randn(10, 16), 4)
    select_topk(torch.randn(300, 16, dtype=torch.float64), 4)
    select_topk(torch.randn(300, 40), 20)
    assert len(calls) == 3
    select_topk(torch.randn(300, 16), 4)
    assert len(calls) == 3


def test_selected_dots_equal_the_gathered_gemm(monkeypatch: pytest.MonkeyPatch) -> None:
    gen = torch.Generator().manual_seed(12)
    dy, rows = torch.randn(50, 33, generator=gen, dtype=torch.float64), torch.randn(9, 33, generator=gen, dtype=torch.float64)
    idx = torch.randint(0, 9, (50, 4), generator=gen)
    expected = (dy @ rows.t()).gather(1, idx)
    torch.testing.assert_close(selected_dots(dy, rows, idx), expected, rtol=1e-12, atol=1e-12)
    monkeypatch.setattr(cpu_path.torch.ops.aten, "_embedding_bag_per_sample_weights_backward", None, raising=False)
    torch.testing.assert_close(selected_dots(dy, rows, idx), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("gate_name", ["softmax", "static", "magnitude_bias"])
def test_cpu_path_under_bf16_autocast(gate_name: str) -> None:
    """Under autocast the fast path runs in bf16 (as a linear layer would) and gives fp32 weights fp32 gradients."""
    problem = make_problem(gate_name, dtype=torch.float32, seed=5, m=64)
    y_ref, g_ref = run_and_grad(problem, "reference")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, grads = run_and_grad(problem, "cpu")
    assert y.dtype == torch.bfloat16 and relative_error(y, y_ref) < 3e-2
    for name, ref in g_ref.items():
        if ref is not None:
            assert grads[name] is not None and grads[name].dtype == torch.float32, name
            assert relative_error(grads[name], ref) < 0.1, name  # bf16 may flip near-tie top-k choices
