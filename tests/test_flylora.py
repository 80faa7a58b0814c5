"""FlyLoRA on the rank-gated op: sparse random A (pattern and scale), top-k by magnitude with the
bias, the bias update, only B trains, a dense reference on the reference and CPU kernel paths,
end to end."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from clbench.runner import RunOptions, run
from clbench.strategies.flylora.layer import FlyLoRALinear, sparse_random_projection

BACKENDS = ["reference", "cpu"]


def _layer(d_in: int = 10, d_out: int = 6, rank: int = 8, k: int = 3, **kwargs: object) -> FlyLoRALinear:
    torch.manual_seed(0)
    base = nn.Linear(d_in, d_out).double()
    return FlyLoRALinear(base, rank, k, kwargs.get("alpha"), kwargs.get("density"), float(kwargs.get("bias_lr", 1e-3)),  # type: ignore[arg-type]
                         torch.Generator().manual_seed(1))


def test_sparse_projection_has_p_nonzeros_per_row_drawn_from_n0_1_over_r2() -> None:
    a = sparse_random_projection(32, 4096, 8 / 32, torch.Generator().manual_seed(0))
    assert ((a != 0).sum(dim=1) == 1024).all()  # p = ρ·d_in = 1024 per row
    nonzero = a[a != 0]
    assert abs(float(nonzero.std()) - 1 / 32) < 0.03 / 32 and abs(float(nonzero.mean())) < 0.03 / 32
    assert not torch.equal((a[0] != 0), (a[1] != 0))  # rows choose their own columns
    tiny = sparse_random_projection(4, 3, 0.1, torch.Generator().manual_seed(0))
    assert ((tiny != 0).sum(dim=1) == 1).all()  # at least one nonzero per row
    again = sparse_random_projection(32, 4096, 8 / 32, torch.Generator().manual_seed(0))
    assert torch.equal(a, again)  # reproducible from the seed


def test_layer_defaults_follow_the_paper() -> None:
    layer = _layer(d_in=64, rank=32, k=8)
    assert layer.alpha == 64 and layer.scaling == 2.0 and layer.density == 0.25
    assert ((layer.A != 0).sum(dim=1) == 16).all()
    assert torch.count_nonzero(layer.B) == 0 and layer.B.requires_grad
    assert "A" in dict(layer.named_buffers()) and "A" not in dict(layer.named_parameters())


def _dense_reference(layer: FlyLoRALinear, x: torch.Tensor) -> torch.Tensor:
    """The official forward, written out: W0 x + b + (α/r) B (mask ⊙ A x), mask = top-k of |A x + d|."""
    y = x @ layer.A.t()
    chosen = (y + layer.routing_bias).abs().topk(layer.k, dim=-1).indices
    mask = torch.zeros_like(y).scatter(-1, chosen, 1.0)
    return F.linear(x, layer.base.weight, layer.base.bias) + F.linear(y * mask, layer.B) * (layer.alpha / layer.rank)


@pytest.mark.parametrize("backend", BACKENDS)
def test_layer_matches_the_dense_reference_and_only_B_gets_gradients(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLBENCH_KERNELS", backend)
    layer = _layer()
    with torch.no_grad():
        layer.B.normal_()
        layer.routing_bias.normal_(std=0.1)
    x = torch.randn(3, 5, 10, dtype=torch.float64, requires_grad=True)
    y = layer(x)
    reference = _dense_reference(layer, x.reshape(-1, 10)).reshape(3, 5, 6)
    torch.testing.assert_close(y, reference)
    grad_out = torch.randn_like(y)
    got = torch.autograd.grad(y, [x, layer.B], grad_out, retain_graph=True)
    want = torch.autograd.grad(reference, [x, layer.B], grad_out)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w)
    y.backward(grad_out)
    trained = [name for name, p in layer.named_parameters() if p.grad is not None]
    assert trained == ["B"] and not layer.A.requires_grad and layer.base.weight.grad is None


@pytest.mark.parametrize("backend", BACKENDS)
def test_top_k_is_by_magnitude_with_the_bias_and_counts_usage(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLBENCH_KERNELS", backend)
    layer = _layer(d_in=4, d_out=4, rank=4, k=1)
    with torch.no_grad():
        layer.A.copy_(torch.diag(torch.tensor([1.0, 1.0, 1.0, 1.0])))  # z = x
        layer.B.copy_(torch.eye(4))  # adapter output = scaling · mask ⊙ x
        layer.base.weight.zero_()
        layer.base.bias.zero_()
    x = torch.tensor([[0.5, -3.0, 1.0, 2.0]], dtype=torch.float64)
    layer.train()
    out = layer(x)
    torch.testing.assert_close(out, torch.tensor([[0.0, -6.0, 0.0, 0.0]], dtype=torch.float64))  # |-3| wins; α/r = 2
    assert layer.usage.tolist() == [0.0, 1.0, 0.0, 0.0]
    with torch.no_grad():
        layer.routing_bias.copy_(torch.tensor([0.0, 2.5, 0.0, 0.0]))  # |-3 + 2.5| = .5 now loses to |2|
    torch.testing.assert_close(layer(x), torch.tensor([[0.0, 0.0, 0.0, 4.0]], dtype=torch.float64))
    assert layer.usage.tolist() == [0.0, 1.0, 0.0, 1.0]


def test_bias_update_rule() -> None:
    layer = _layer(rank=4, k=1, bias_lr=1e-3)
    layer.usage.copy_(torch.tensor([6.0, 1.0, 1.0, 0.0]))  # mean 2
    counts = layer.update_routing_bias_()
    assert counts.tolist() == [6.0, 1.0, 1.0, 0.0]
    torch.testing.assert_close(layer.routing_bias, torch.tensor([-1e-3, 1e-3, 1e-3, 1e-3], dtype=torch.float64))
    assert layer.usage.sum() == 0
    layer.update_routing_bias_()  # no tokens since: no change
    torch.testing.assert_close(layer.routing_bias, torch.tensor([-1e-3, 1e-3, 1e-3, 1e-3], dtype=torch.float64))


def test_flylora_runs_end_to_end_on_digits(small_digits: Path, tmp_path: Path) -> None:
    overrides = {"epochs": "2", "lr": "0.01", "rank": "16", "k": "4"}
    result = run(RunOptions(benchmark=str(small_digits), strategy="flylora", seed=1, out=tmp_path, progress=False, overrides=overrides))
    assert result["status"] == "complete"
    assert result["matrix"]["values"][1][0] > 0.75  # the first task is learnt (B and the head only)
    assert all(row["routing_bias_spread"] > 0 for row in result["telemetry"])  # the balancing bias moved
