"""O-LoRA: the per-task LoRA layer, the orthogonality penalty, frozen past adapters, resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from clbench import runner as runner_module
from clbench.nn.multi_lora import TaskLoRALinear, apply_task_lora
from clbench.runner import RunOptions, run
from clbench.strategies.olora import OLoRA, OLoRAConfig, orthogonality_loss


def _layer(seed: int = 0, d_in: int = 12, d_out: int = 5) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(d_in, d_out).double()


def test_task_lora_forward_equals_hand_formula_and_consolidation_keeps_function() -> None:
    base = _layer()
    reference = nn.Linear(12, 5).double()
    reference.load_state_dict(base.state_dict())
    layer = TaskLoRALinear(base, rank=2, alpha=6.0)
    x = torch.randn(7, 12, dtype=torch.float64)
    torch.testing.assert_close(layer(x), reference(x))  # zero B: the base layer
    with torch.no_grad():
        layer.lora_B.normal_()
    expected = reference(x) + 3.0 * x @ layer.lora_A.t() @ layer.lora_B.t()  # alpha / r = 3
    torch.testing.assert_close(layer(x), expected)
    first_a, first_b = layer.lora_A.detach().clone(), layer.lora_B.detach().clone()
    layer.consolidate_()
    torch.testing.assert_close(layer(x), expected)  # moved to the bank, fresh adapter is zero
    assert layer.bank_rank == 2 and torch.equal(layer.bank_A, first_a) and torch.equal(layer.bank_B, first_b)
    assert torch.count_nonzero(layer.lora_B) == 0 and not torch.equal(layer.lora_A, first_a)
    with torch.no_grad():
        layer.lora_B.normal_()
    both = reference(x) + 3.0 * (x @ first_a.t() @ first_b.t() + x @ layer.lora_A.t() @ layer.lora_B.t())
    torch.testing.assert_close(layer(x), both)
    torch.testing.assert_close(x @ layer.delta_weight().t() + reference(x), both)


def test_orthogonality_loss_is_zero_for_orthogonal_subspaces_and_matches_hand_values() -> None:
    old = torch.zeros(3, 6, dtype=torch.float64)
    old[:, :3] = torch.randn(3, 3, dtype=torch.float64)  # rows in span(e1, e2, e3)
    new = torch.zeros(2, 6, dtype=torch.float64)
    new[:, 3:] = torch.randn(2, 3, dtype=torch.float64)  # rows in span(e4, e5, e6)
    assert float(orthogonality_loss(old, new)) == 0.0
    a_old = torch.tensor([[1.0, 2.0, 0.0], [0.0, -1.0, 3.0]])
    a_new = torch.tensor([[1.0, 1.0, 1.0], [2.0, 0.0, -1.0]])
    # A_old A_newᵀ = [[3, 2], [2, -3]] -> sum of absolute values 10
    assert float(orthogonality_loss(a_old, a_new)) == pytest.approx(10.0)
    assert float(orthogonality_loss(torch.zeros(0, 3), a_new)) == 0.0


def test_penalty_value_and_gradient_match_the_formula() -> None:
    model = nn.Sequential(_layer(0), nn.ReLU(), _layer(1, d_in=5, d_out=5))
    adapters = apply_task_lora(model, {"0": model[0], "2": model[2]}, rank=2, alpha=4.0)
    for adapter in adapters.values():
        with torch.no_grad():
            adapter.lora_B.normal_()
        adapter.consolidate_()
        with torch.no_grad():
            adapter.lora_B.normal_()
    strategy = OLoRA.__new__(OLoRA)
    strategy.config = OLoRAConfig(lambda_orth=0.5, lambda_l2=0.25)
    strategy.ctx = type("Ctx", (), {"device": torch.device("cpu")})()
    strategy.adapters = adapters
    penalty = strategy.penalty()
    expected = sum(0.5 * (a.bank_A @ a.lora_A.t()).abs().sum() + 0.25 * (a.lora_A.norm() + a.lora_B.norm()) for a in adapters.values())
    torch.testing.assert_close(penalty, expected)
    penalty.backward()
    a = adapters["0"]
    overlap = a.bank_A @ a.lora_A.detach().t()
    hand = 0.5 * overlap.sign().t() @ a.bank_A + 0.25 * a.lora_A.detach() / a.lora_A.detach().norm()
    torch.testing.assert_close(a.lora_A.grad, hand)
    assert a.bank_A.grad is None and not a.bank_A.requires_grad  # the past adapter gets nothing


def _interrupt_after_first_task(monkeypatch: pytest.MonkeyPatch) -> None:
    original = runner_module._Run.save_checkpoint

    def save_then_die(self: runner_module._Run, tasks_done: int) -> None:
        original(self, tasks_done)
        if tasks_done == 1:
            raise KeyboardInterrupt("simulated kill after the first checkpoint")

    monkeypatch.setattr(runner_module._Run, "save_checkpoint", save_then_die)


def _record_banks(monkeypatch: pytest.MonkeyPatch) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Check at every task end that the bank left by the previous task was not touched."""
    banks: list[tuple[torch.Tensor, torch.Tensor]] = []
    original = OLoRA.after_task

    def record(self: OLoRA, experience: object) -> None:
        layer = next(iter(self.adapters.values()))
        if layer.bank_rank:
            torch.testing.assert_close(layer.bank_A, banks[-1][0], rtol=0, atol=0)
            torch.testing.assert_close(layer.bank_B, banks[-1][1], rtol=0, atol=0)
            assert not layer.bank_A.requires_grad and not layer.bank_B.requires_grad
        original(self, experience)  # type: ignore[arg-type]
        banks.append((layer.bank_A.clone(), layer.bank_B.clone()))

    monkeypatch.setattr(OLoRA, "after_task", record)
    return banks


def test_olora_runs_freezes_past_adapters_and_resumes_to_identical_metrics(small_digits: Path, tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    overrides = {"epochs": "2", "rank": "4", "lr": "0.01"}
    with monkeypatch.context() as patch:
        banks = _record_banks(patch)
        reference = run(RunOptions(benchmark=str(small_digits), strategy="olora", seed=3, out=tmp_path / "ref", progress=False, overrides=overrides))
    assert len(banks) == 3 and reference["status"] == "complete"
    assert [row["bank_rank_per_layer"] for row in reference["telemetry"]] == [4, 8, 12]
    assert reference["matrix"]["values"][1][0] > 0.9  # the first task is learnt

    with monkeypatch.context() as patch:
        _interrupt_after_first_task(patch)
        with pytest.raises(KeyboardInterrupt):
            run(RunOptions(benchmark=str(small_digits), strategy="olora", seed=3, out=tmp_path / "cut", progress=False, overrides=overrides))
    resumed = run(RunOptions(benchmark=str(small_digits), strategy="olora", seed=3, out=tmp_path / "cut", progress=False, overrides=overrides,
                             resume=True))
    assert resumed["matrix"]["values"] == reference["matrix"]["values"]
    assert resumed["metrics"] == reference["metrics"]


def test_output_slice_adapts_only_the_chosen_rows() -> None:
    base = _layer(d_in=4, d_out=12)  # a fused [q; k; v] projection of width 4
    reference = nn.Linear(4, 12).double()
    reference.load_state_dict(base.state_dict())
    layer = TaskLoRALinear(base, rank=2, alpha=2.0, outputs=(4, 12))
    assert layer.lora_B.shape == (8, 2)
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(3, 4, dtype=torch.float64)
    y = layer(x)
    torch.testing.assert_close(y[:, :4], reference(x)[:, :4])  # q untouched
    torch.testing.assert_close(y[:, 4:], reference(x)[:, 4:] + x @ layer.lora_A.t() @ layer.lora_B.t())
    layer.consolidate_()
    torch.testing.assert_close(layer(x), y)
    delta = layer.delta_weight()
    assert delta.shape == (12, 4) and torch.count_nonzero(delta[:4]) == 0
    torch.testing.assert_close(reference(x) + x @ delta.t(), y)
