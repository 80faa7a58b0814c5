"""InfLoRA: designed A_t, DualGPM memory and threshold ramp, only B trains, end to end and resume."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from clbench import runner as runner_module
from clbench.runner import RunOptions, run
from clbench.strategies.inflora import InfLoRA, InputMoments
from clbench.strategies.inflora.dualgpm import REMOVE, RETAIN, DualGPM, design_down_projection, energy_threshold


def _basis(*columns: int, d: int = 6) -> torch.Tensor:
    return torch.eye(d, dtype=torch.float64)[:, list(columns)]


def _same_rows_up_to_sign(a: torch.Tensor, b: torch.Tensor) -> None:
    signs = torch.sign((a * b).sum(dim=1, keepdim=True))
    torch.testing.assert_close(a * signs, b)


def test_energy_threshold_ramps_linearly_from_lamb_towards_lame() -> None:
    ramp = [energy_threshold(t, 10, 0.98, 1.0) for t in range(10)]
    assert ramp[0] == pytest.approx(0.98) and ramp[5] == pytest.approx(0.99) and ramp[9] == pytest.approx(0.998)
    assert all(b > a for a, b in zip(ramp, ramp[1:], strict=False))
    with pytest.raises(ValueError):
        energy_threshold(0, 0, 0.9, 1.0)


def test_designed_A_equals_the_svd_construction_on_a_hand_made_matrix() -> None:
    cov = torch.diag(torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0, 0.5], dtype=torch.float64))
    # No memory: the top-2 eigen-directions e1, e2, divided by √3.
    _same_rows_up_to_sign(design_down_projection(cov, None, 2), _basis(0, 1).t() / math.sqrt(3))
    # remove e1, e2: C - M Mᵀ C = diag(0, 0, 3, 2, 1, .5) -> e3, e4.
    removed = DualGPM(_basis(0, 1), REMOVE)
    a = design_down_projection(cov, removed, 2)
    _same_rows_up_to_sign(a, _basis(2, 3).t() / math.sqrt(3))
    # retain only the free span{e4, e5, e6}: M Mᵀ C = diag(0, 0, 0, 2, 1, .5) -> e4, e5.
    free = DualGPM(_basis(3, 4, 5), RETAIN)
    _same_rows_up_to_sign(design_down_projection(cov, free, 2), _basis(3, 4).t() / math.sqrt(3))
    # A general matrix: A_t is orthogonal to the removed subspace and built from (I - M Mᵀ) C.
    torch.manual_seed(0)
    x = torch.randn(50, 6, dtype=torch.float64) @ torch.randn(6, 6, dtype=torch.float64)
    general = x.t() @ x / 50
    q, _ = torch.linalg.qr(torch.randn(6, 2, dtype=torch.float64))
    memory = DualGPM(q, REMOVE)
    a = design_down_projection(general, memory, 3)
    torch.testing.assert_close(a @ q, torch.zeros(3, 2, dtype=torch.float64), atol=1e-12, rtol=0)
    u, _, _ = torch.linalg.svd((torch.eye(6, dtype=torch.float64) - q @ q.t()) @ general)
    _same_rows_up_to_sign(a, u[:, :3].t() / math.sqrt(3))


def test_dualgpm_first_task_keeps_the_energy_threshold_and_picks_the_form() -> None:
    # Squared singular values 16, 9, 4, 1, .25, .01 (total 30.26): cumulative ratios .529 .826 .958 .991 .9997 1
    cov = torch.diag(torch.tensor([4.0, 3.0, 2.0, 1.0, 0.5, 0.1], dtype=torch.float64))
    memory = DualGPM.first(cov, 0.9)  # two ratios below .9 -> r = 2 < d/2 -> remove, basis e1, e2
    assert memory.mode == REMOVE and memory.used_dims == 2
    torch.testing.assert_close(memory.basis.abs(), _basis(0, 1))
    wide = DualGPM.first(cov, 0.995)  # four below .995 -> r = 4 >= 3 -> retain the complement e5, e6
    assert wide.mode == RETAIN and wide.used_dims == 4
    torch.testing.assert_close(wide.basis.abs(), _basis(4, 5))


def test_dualgpm_update_adds_new_directions_and_switches_to_retain_past_half() -> None:
    memory = DualGPM(_basis(0), REMOVE)
    # The new task's inputs live in e1 (known) and e2, e3 (new), energies 9, 4, 1 (ratios of 98 = 81+16+1).
    cov = torch.diag(torch.tensor([9.0, 4.0, 1.0, 0.0, 0.0, 0.0], dtype=torch.float64))
    assert memory.update(cov, 0.95)  # kept 81/98 = .83 -> add e2 (.99) -> stop
    assert memory.mode == REMOVE and memory.used_dims == 2
    torch.testing.assert_close(memory.basis.abs(), _basis(0, 1))
    assert not memory.update(cov, 0.95)  # nothing new is needed
    assert memory.update(cov, 0.999)  # add e3: 3 used dims of 6 is not past half
    assert memory.mode == REMOVE and memory.used_dims == 3
    more = torch.diag(torch.tensor([0.0, 0.0, 0.0, 5.0, 0.0, 0.0], dtype=torch.float64))
    assert memory.update(more, 0.9)  # e4 -> 4 used > 3: switch, basis = free span{e5, e6}
    assert memory.mode == RETAIN and memory.used_dims == 4
    torch.testing.assert_close(memory.basis @ memory.basis.t(), _basis(4, 5) @ _basis(4, 5).t())
    # In retain form, using e5 shrinks the free basis to e6.
    assert memory.update(torch.diag(torch.tensor([0.0, 0.0, 0.0, 0.0, 3.0, 0.0], dtype=torch.float64)), 0.9)
    assert memory.mode == RETAIN and memory.used_dims == 5
    torch.testing.assert_close(memory.basis.abs(), _basis(5))


def test_input_moments_are_the_mean_outer_product_over_tokens() -> None:
    layer = torch.nn.Linear(4, 3).double()
    moments = InputMoments({"l": layer})
    a = torch.randn(2, 5, 4, dtype=torch.float64)
    b = torch.randn(3, 4, dtype=torch.float64)
    layer(a)
    layer(b)
    tokens = torch.cat([a.reshape(-1, 4), b])
    torch.testing.assert_close(moments.close()["l"], tokens.t() @ tokens / 13)


def _interrupt_after_first_task(monkeypatch: pytest.MonkeyPatch) -> None:
    original = runner_module._Run.save_checkpoint

    def save_then_die(self: runner_module._Run, tasks_done: int) -> None:
        original(self, tasks_done)
        if tasks_done == 1:
            raise KeyboardInterrupt("simulated kill after the first checkpoint")

    monkeypatch.setattr(runner_module._Run, "save_checkpoint", save_then_die)


def test_inflora_trains_only_B_keeps_A_orthogonal_to_old_inputs_and_resumes(small_digits: Path, tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    checks: list[float] = []
    original_before, original_after = InfLoRA.before_task, InfLoRA.after_task

    def before(self: InfLoRA, experience: object) -> None:
        original_before(self, experience)  # type: ignore[arg-type]
        for name, adapter in self.adapters.items():
            assert not adapter.lora_A.requires_grad and adapter.lora_B.requires_grad
            if name in self.memory and self.memory[name].mode == REMOVE:  # A_t ⟂ the old subspace
                checks.append(float((adapter.lora_A.double() @ self.memory[name].basis).abs().max()))
        self._a_before = {n: a.lora_A.detach().clone() for n, a in self.adapters.items()}  # type: ignore[attr-defined]

    def after(self: InfLoRA, experience: object) -> None:
        for name, adapter in self.adapters.items():
            assert torch.equal(adapter.lora_A, self._a_before[name])  # type: ignore[attr-defined]
            assert torch.count_nonzero(adapter.lora_B) > 0  # B trained
        original_after(self, experience)  # type: ignore[arg-type]

    overrides = {"epochs": "2", "rank": "4", "lr": "0.01"}
    with monkeypatch.context() as patch:
        patch.setattr(InfLoRA, "before_task", before)
        patch.setattr(InfLoRA, "after_task", after)
        reference = run(RunOptions(benchmark=str(small_digits), strategy="inflora", seed=2, out=tmp_path / "ref", progress=False, overrides=overrides))
    assert len(checks) == 2 and max(checks) < 1e-5
    assert reference["matrix"]["values"][1][0] > 0.9
    assert [row["bank_rank_per_layer"] for row in reference["telemetry"]] == [4, 8, 12]
    assert reference["telemetry"][-1]["gpm_used_dims_mean"] > 0

    with monkeypatch.context() as patch:
        _interrupt_after_first_task(patch)
        with pytest.raises(KeyboardInterrupt):
            run(RunOptions(benchmark=str(small_digits), strategy="inflora", seed=2, out=tmp_path / "cut", progress=False, overrides=overrides))
    resumed = run(RunOptions(benchmark=str(small_digits), strategy="inflora", seed=2, out=tmp_path / "cut", progress=False, overrides=overrides,
                             resume=True))
    assert resumed["matrix"]["values"] == reference["matrix"]["values"]
    assert resumed["telemetry"] == reference["telemetry"]


@pytest.mark.slow  # a ViT run: minutes of wall time on a loaded 2-core machine
def test_inflora_on_a_tiny_vit_adapts_key_and_value_and_trains_the_current_head(small_digits: Path, tmp_path: Path,
                                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []
    original = InfLoRA.before_task

    def before(self: InfLoRA, experience: object) -> None:
        original(self, experience)  # type: ignore[arg-type]
        for name, adapter in self.adapters.items():
            assert name.endswith("attn.qkv") and adapter.outputs == (adapter.in_features, 3 * adapter.in_features)
        seen.append(sorted({n.rsplit(".", 1)[0] for n, p in self.model.named_parameters() if p.requires_grad and n.startswith("heads.")}))

    monkeypatch.setattr(InfLoRA, "before_task", before)
    result = run(RunOptions(benchmark=str(small_digits), strategy="inflora", backbone="vit:tiny", seed=0, out=tmp_path, progress=False,
                            overrides={"epochs": "3", "rank": "4", "lr": "0.01"}))
    assert result["status"] == "complete"
    assert seen == [["heads.0"], ["heads.1"], ["heads.2"]]  # one head per task, only the current one trains
    values = result["matrix"]["values"]
    assert values[1][0] > 0.6  # the first task is learnt (0.72 measured; chance 0.5 on a random tiny ViT)
    assert values[1][1:] == [0.0, 0.0]  # unseen tasks' heads are hidden (the official inference rule)
