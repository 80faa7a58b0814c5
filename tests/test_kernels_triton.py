"""The Triton kernels against the fp64 reference: under the Triton interpreter on CPU, and on a GPU when present.

The interpreter must be switched on before Triton defines the kernels, so the default run starts one
child pytest with ``TRITON_INTERPRET=1`` that runs the ``interp`` tests of this file (fp32, small odd
shapes). On a CUDA machine ``pytest -m gpu tests/test_kernels_triton.py`` runs the same checks
compiled, with TF32-aware tolerances. Every output the kernels write is pre-filled with poison
(NaN, or -7 for integers) so an element a kernel forgets to write fails the test.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_kernels_support import GATE_NAMES, K, R, assert_valid_topk, make_problem, relative_error, run_and_grad, \
    scores

from clbench.kernels import RankMaskGate, TopKSoftmaxGate, rank_gated_lora
from clbench.kernels.plan import GateKind, join_banks, plan_gate

CHILD = os.environ.get("CLBENCH_TRITON_CHILD") == "1"
interp = pytest.mark.skipif(not CHILD, reason="runs in the TRITON_INTERPRET=1 child process")
HAS_CUDA = torch.cuda.is_available()


def _run_interpreter_child(markers: str) -> None:
    if CHILD:
        pytest.skip("already the child")
    env = {**os.environ, "TRITON_INTERPRET": "1", "CLBENCH_TRITON_CHILD": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run([sys.executable, "-m", "pytest", __file__, "-q", "-x", "-p", "no:cacheprovider",
                             "-k", "interp", "-m", markers],
                            capture_output=True, text=True, env=env, cwd=Path(__file__).parent.parent, timeout=1200)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "failed" not in result.stdout


def test_triton_kernels_under_the_interpreter() -> None:
    """Runs this file's interpreter tests in a child with ``TRITON_INTERPRET=1`` (set before Triton loads)."""
    _run_interpreter_child("not slow and not gpu")


@pytest.mark.slow
def test_triton_kernels_under_the_interpreter_larger_shapes() -> None:
    """The slow interpreter tests (more tokens, a CLIP-sized bank of 160 ranks)."""
    _run_interpreter_child("slow and not gpu")


# Other engineers' layer tests that pick CLBENCH_KERNELS=cpu; the plugin maps that to Triton in the child.
LAYER_TESTS = ("test_mora_layer.py", "test_codyra.py", "test_flylora*.py", "test_smora*.py")
# These compare against the base layer bit for bit; a fused GEMM sums in another order (differences ~1e-16).
BITWISE_ONLY = ("test_mora_layer.py::test_threshold_above_one_gives_the_base_layer_at_inference[cpu]",
                "test_codyra.py::test_fresh_adapter_is_the_base_layer_with_the_official_initialisation[cpu]")


@pytest.mark.slow
def test_method_layer_tests_pass_through_the_triton_path() -> None:
    """MoRA, CoDyRA, FlyLoRA and SMoRA mechanism tests, re-run with their fast path sent to the Triton kernels."""
    if CHILD:
        pytest.skip("already the child")
    here = Path(__file__).parent
    files = sorted({str(path) for pattern in LAYER_TESTS for path in here.glob(pattern)})
    if not files:
        pytest.skip("no method layer tests in this checkout")
    deselect = [arg for node in BITWISE_ONLY if (here / node.split("::")[0]).exists()
                for arg in ("--deselect", f"{here.name}/{node}")]
    env = {**os.environ, "TRITON_INTERPRET": "1", "CUDA_VISIBLE_DEVICES": "",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(here), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, "-m", "pytest", *files, *deselect, "-q", "-p", "no:cacheprovider",
                             "-p", "test_kernels_triton_plugin", "-m", "not slow and not gpu"],
                            capture_output=True, text=True, env=env, cwd=here.parent, timeout=1800)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


@interp
@pytest.mark.parametrize("gate_name", ["softmax_threshold", "static", "dense"])
def test_interp_fp64_is_exact(gate_name: str) -> None:
    """With fp64 inputs the kernels accumulate in fp64: outputs and gradients agree to rounding."""
    problem = make_problem(gate_name, dtype=torch.float64, seed=7)
    y_ref, g_ref = run_and_grad(problem, "reference")
    y_tri, g_tri = run_and_grad(problem, "triton")
    assert relative_error(y_tri, y_ref) < 1e-12
    for name, ref in g_ref.items():
        assert relative_error(g_tri[name], ref) < 1e-12, name


@pytest.fixture
def poisoned(monkeypatch: pytest.MonkeyPatch):
    """Make every ``torch.empty``/``empty_like`` in the Triton path return poison instead of stale memory."""
    from clbench.kernels import triton_path

    real_empty, real_empty_like = torch.empty, torch.empty_like

    def fill(t: torch.Tensor) -> torch.Tensor:
        return t.fill_(float("nan")) if t.is_floating_point() else t.fill_(-7)

    class PoisonTorch:
        def __getattr__(self, name: str):
            return getattr(torch, name)

        @staticmethod
        def empty(*args, **kwargs):
            return fill(real_empty(*args, **kwargs))

        @staticmethod
        def empty_like(*args, **kwargs):
            return fill(real_empty_like(*args, **kwargs))

    monkeypatch.setattr(triton_path, "torch", PoisonTorch())
    return triton_path


def _tolerance(device: str) -> float:
    # Interpreter dots are exact fp32; compiled fp32 dots use TF32 unless disabled.
    return 1e-5 if device == "cpu" else 2e-3


def _check_against_reference(gate_name: str, device: str, **shape: int) -> None:
    problem64 = make_problem(gate_name, dtype=torch.float64, seed=11, **shape)
    problem32 = make_problem(gate_name, dtype=torch.float32, seed=11, device=device, **shape)
    r = problem32.a_train.shape[0] + (0 if problem32.a_frozen is None else problem32.a_frozen.shape[0])
    usage_ref = torch.zeros(r, dtype=torch.long)
    usage_tri = torch.zeros(r, dtype=torch.long, device=device)
    y_ref, g_ref = run_and_grad(problem64, "reference", usage_ref)
    y_tri, g_tri = run_and_grad(problem32, "triton", usage_tri)
    tol = _tolerance(device)
    plan = plan_gate(problem32.gate, r, y_tri.shape[0])
    if plan.k:
        from clbench.kernels.triton_path import shrink_route

        a_all, _, _ = join_banks(problem32.a_frozen, problem32.b_frozen, problem32.a_train, problem32.b_train, 1.0)
        routed = shrink_route(problem32.x.detach(), a_all.contiguous(), plan, None)
        assert_valid_topk((routed.p != 0).cpu(), scores(problem64), plan.k, tol=1e-4)
    assert torch.isfinite(y_tri).all()
    assert relative_error(y_tri, y_ref) < tol, relative_error(y_tri, y_ref)
    assert torch.equal(usage_tri.cpu(), usage_ref)
    assert g_ref.keys() == g_tri.keys()
    for name, ref in g_ref.items():
        assert g_tri[name] is not None, name
        assert relative_error(g_tri[name], ref) < tol * 3, (name, relative_error(g_tri[name], ref))


@interp
@pytest.mark.parametrize("gate_name", GATE_NAMES)
def test_interp_every_gate_matches_reference(gate_name: str, poisoned) -> None:
    _check_against_reference(gate_name, "cpu")


@interp
@pytest.mark.parametrize(("gate_name", "shape"), [
    ("magnitude_bias", dict(r_frozen=11, r_train=13, k=1)),
    ("softmax", dict(r_frozen=0, r_train=13, k=13)),
    pytest.param("softmax", dict(m=70, d_in=33, d_out=19, r_frozen=16, r_train=8, k=8), marks=pytest.mark.slow),
    pytest.param("softmax", dict(m=40, d_in=40, d_out=50, r_frozen=144, r_train=16, k=16), marks=pytest.mark.slow),
    pytest.param("static", dict(m=40, d_in=40, d_out=50, r_frozen=144, r_train=16), marks=pytest.mark.slow),
])
def test_interp_odd_ranks_and_extreme_k(gate_name: str, shape: dict, poisoned) -> None:
    _check_against_reference(gate_name, "cpu", **shape)


@interp
def test_interp_outputs_are_fully_written(poisoned) -> None:
    """Every element of z, p, the norms, the flags and y is written (poison would survive otherwise)."""
    p = make_problem("softmax", dtype=torch.float32)
    plan = plan_gate(p.gate, R, p.x.shape[0])
    a_all, b_all, _ = join_banks(p.a_frozen, p.b_frozen, p.a_train, p.b_train, p.train_scale)
    y, routed = poisoned.forward(plan, p.x.detach(), p.weight.detach(), p.bias.detach(), a_all, b_all, None)
    for tensor in (y, routed.z, routed.p, routed.norm):
        assert torch.isfinite(tensor).all()
    assert (routed.flags >= 0).all() and routed.flags.shape[0] == -(-p.x.shape[0] // routed.config.route_m)
    torch.testing.assert_close(routed.z, p.x.detach() @ a_all.t(), rtol=1e-5, atol=1e-5)


@interp
def test_interp_rank_blocks_nobody_selected_are_skipped() -> None:
    """Tokens that use only ranks 0-15: K2 must not read B's other rank blocks (NaN there stays out)."""
    p = make_problem("mask", dtype=torch.float32, r_frozen=20, r_train=20)
    mask = torch.zeros(p.x.shape[0], 40)
    mask[:, :16] = (torch.rand(p.x.shape[0], 16) < 0.5).float()
    gate = RankMaskGate(mask)
    b_frozen = p.b_frozen.detach().clone()
    b_train = p.b_train.detach().clone()
    expected = rank_gated_lora(p.x, p.weight, p.bias, p.a_frozen, b_frozen, p.a_train, b_train, gate,
                               backend="reference").detach()
    b_frozen[:, 16:] = float("nan")
    b_train[:] = float("nan")
    y = rank_gated_lora(p.x.detach(), p.weight, p.bias, p.a_frozen, b_frozen, p.a_train, b_train, gate,
                        backend="triton")
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)
    # And with skipping off the NaNs do reach the output: the test can fail.
    from clbench.kernels.triton_path import forward

    a_all, b_all, _ = join_banks(p.a_frozen, b_frozen, p.a_train, b_train, 1.0)
    plan = plan_gate(gate, 40, p.x.shape[0])
    y_dense, _ = forward(plan, p.x.detach(), p.weight.detach(), p.bias.detach(), a_all, b_all, None, skip_blocks=False)
    assert torch.isnan(y_dense).any()


@interp
def test_interp_threshold_above_one_is_the_base_layer() -> None:
    p = make_problem("softmax", dtype=torch.float32)
    gate = TopKSoftmaxGate(k=K, temperature=0.3, threshold=1.01)
    y = rank_gated_lora(p.x.detach(), p.weight, p.bias, p.a_frozen, p.b_frozen, p.a_train, p.b_train, gate,
                        backend="triton")
    torch.testing.assert_close(y, torch.nn.functional.linear(p.x, p.weight, p.bias).detach(), rtol=1e-5, atol=1e-5)
    plan = plan_gate(gate, R, p.x.shape[0])
    assert plan.kind == GateKind.TOPK_SOFTMAX


@interp
def test_interp_perf_variants_compute_the_layer() -> None:
    """The benchmark's Triton rows time the real operation (checked on the tiny shape)."""
    from clbench import perfbench

    shape = perfbench.SHAPE_SETS["tiny"][0]
    problem = perfbench.make_problem(shape, torch.device("cpu"), torch.float32)
    expected = perfbench._layer_fn("eager", problem)[0](problem.x).detach()
    with torch.no_grad():
        for impl in ("triton", "triton-noskip", "cpu"):
            torch.testing.assert_close(perfbench._layer_fn(impl, problem)[0](problem.x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
def test_gpu_perf_command_runs(cli, tmp_path: Path) -> None:
    status, out, err = cli("perf", "--device", "cuda", "--shapes", "tiny", "--json", tmp_path / "gpu.json")
    assert status == 0, err
    assert "triton" in out


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("gate_name", GATE_NAMES)
def test_gpu_every_gate_matches_reference(gate_name: str, poisoned) -> None:
    _check_against_reference(gate_name, "cuda")
    _check_against_reference(gate_name, "cuda", m=1000, d_in=200, d_out=300, r_frozen=150, r_train=10, k=16)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
def test_gpu_bf16_against_fp64_reference() -> None:
    p64 = make_problem("softmax", dtype=torch.float64, seed=2, m=512, d_in=256, d_out=256, r_frozen=48, r_train=16, k=8)
    p16 = make_problem("softmax", dtype=torch.bfloat16, seed=2, device="cuda", m=512, d_in=256, d_out=256, r_frozen=48,
                       r_train=16, k=8)
    y_ref, _ = run_and_grad(p64, "reference")
    y_tri, _ = run_and_grad(p16, "triton")
    assert relative_error(y_tri, y_ref) < 1e-2
