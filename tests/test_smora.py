"""SMoRA on the rank-gated op: router gates, top-k, normalisation times k, bias updates, a dense
reference (outputs and gradients, on the reference and CPU kernel paths), dropout, end to end."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from clbench.runner import RunOptions, run
from clbench.strategies.smora.layer import SMoRALinear, smora_gates

BACKENDS = ["reference", "cpu"]


def test_gates_keep_top_k_of_biased_scores_normalised_to_sum_k() -> None:
    scores = torch.tensor([[0.9, 0.1, 0.5, 0.7], [0.2, 0.8, 0.6, 0.1]], dtype=torch.float64)
    gates, idx = smora_gates(scores, 2)
    # row 0 keeps 0.9 and 0.7 -> 2·(0.9, 0.7)/1.6; row 1 keeps 0.8 and 0.6 -> 2·(0.8, 0.6)/1.4
    expected = torch.tensor([[1.125, 0.0, 0.0, 0.875], [0.0, 8 / 7, 6 / 7, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(gates, expected)
    torch.testing.assert_close(gates.sum(-1), torch.full((2,), 2.0, dtype=torch.float64))
    assert sorted(idx[0].tolist()) == [0, 3]
    layer = SMoRALinear(nn.Linear(3, 2).double(), rank=4, k=2, alpha=4.0)
    with torch.no_grad():
        layer.router.copy_(torch.zeros(4, 3))
        layer.routing_bias.copy_(torch.tensor([0.0, 0.3, 0.2, -0.1]))
    # zero router: every score is sigmoid(0) = .5, so the bias alone picks ranks 1 and 2, and the
    # gates are the biased scores .8 and .7 normalised: 2·(.8, .7)/1.5
    gates, idx = layer.route(torch.randn(5, 3, dtype=torch.float64))
    torch.testing.assert_close(gates[0], torch.tensor([0.0, 1.6 / 1.5, 1.4 / 1.5, 0.0], dtype=torch.float64))
    assert sorted(idx[0].tolist()) == [1, 2]


def _dense_reference(layer: SMoRALinear, x: torch.Tensor) -> torch.Tensor:
    """The official dense formula, written out: base + (α/k) Σ_r g_r (A_r·x) B_r."""
    scores = torch.sigmoid(x @ layer.router.t()).repeat_interleave(layer.partition, dim=-1) + layer.routing_bias
    kept, idx = scores.topk(layer.k, dim=-1)
    gates = torch.zeros_like(scores).scatter(-1, idx, kept)
    gates = gates / gates.sum(-1, keepdim=True) * layer.k
    mid = torch.einsum("rj,ij->ir", layer.lora_A, x)
    return F.linear(x, layer.base.weight, layer.base.bias) + layer.scaling * torch.einsum("ir,jr->ij", mid * gates, layer.lora_B)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("partition", [1, 2])
def test_layer_matches_the_dense_reference_in_outputs_and_gradients(backend: str, partition: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLBENCH_KERNELS", backend)
    torch.manual_seed(0)
    layer = SMoRALinear(nn.Linear(10, 7).double(), rank=8, k=3, alpha=6.0, partition=partition).eval()
    with torch.no_grad():
        layer.lora_B.normal_()
        layer.routing_bias.normal_(std=0.05)
    x = torch.randn(2, 9, 10, dtype=torch.float64, requires_grad=True)
    y = layer(x)
    reference = _dense_reference(layer, x.reshape(-1, 10)).reshape(2, 9, 7)
    torch.testing.assert_close(y, reference)
    grad_out = torch.randn_like(y)
    params = [x, layer.lora_A, layer.lora_B, layer.router]
    got = torch.autograd.grad(y, params, grad_out)
    want = torch.autograd.grad(reference, params, grad_out)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w)
    assert layer.base.weight.grad is None and got[3].abs().sum() > 0  # the router trains through the gates


@pytest.mark.parametrize("backend", BACKENDS)
def test_dropout_hits_the_adapter_input_only(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLBENCH_KERNELS", backend)
    torch.manual_seed(1)
    layer = SMoRALinear(nn.Linear(6, 4).double(), rank=4, k=2, alpha=4.0, dropout=0.5).train()
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(12, 6, dtype=torch.float64)
    torch.manual_seed(5)
    y = layer(x)
    torch.manual_seed(5)
    dropped = F.dropout(x, 0.5, training=True)  # the same mask the layer drew
    adapter_only = _dense_reference(layer, dropped) - F.linear(dropped, layer.base.weight, layer.base.bias)
    torch.testing.assert_close(y, F.linear(x, layer.base.weight, layer.base.bias) + adapter_only)


def test_bias_update_follows_sign_of_mean_minus_count_and_only_counts_training() -> None:
    layer = SMoRALinear(nn.Linear(3, 2).double(), rank=4, k=2, alpha=4.0, bias_lr=1e-5)
    with torch.no_grad():
        layer.router.zero_()
        layer.routing_bias.copy_(torch.tensor([0.0, 0.3, 0.2, -0.1], dtype=torch.float64))
    layer.eval()
    layer(torch.randn(5, 3, dtype=torch.float64))
    assert layer.usage.sum() == 0  # evaluation does not count
    layer.train()
    layer(torch.randn(5, 3, dtype=torch.float64))  # every token picks ranks 1 and 2
    torch.testing.assert_close(layer.usage, torch.tensor([0.0, 5.0, 5.0, 0.0], dtype=torch.float64))
    counts = layer.update_routing_bias_()
    assert counts.tolist() == [0.0, 5.0, 5.0, 0.0]
    # mean 2.5: under-used ranks 0, 3 go up by u, over-used 1, 2 down by u
    torch.testing.assert_close(layer.routing_bias, torch.tensor([1e-5, 0.3 - 1e-5, 0.2 - 1e-5, -0.1 + 1e-5], dtype=torch.float64))
    assert layer.usage.sum() == 0


def test_smora_runs_end_to_end_on_digits(small_digits: Path, tmp_path: Path) -> None:
    result = run(RunOptions(benchmark=str(small_digits), strategy="smora", seed=0, out=tmp_path, progress=False,
                            overrides={"epochs": "2", "lr": "0.01", "bias_lr": "0.01"}))
    assert result["status"] == "complete"
    assert result["matrix"]["values"][1][0] > 0.9
    assert all(row["routing_bias_spread"] > 0 for row in result["telemetry"])  # the balancing bias moved
