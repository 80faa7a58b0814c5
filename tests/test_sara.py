"""SaRA's mechanism against readable references: exact selection, bit-identical frozen entries, the
reduction to AdamW, the sparse path against the dense-masked one, the nuclear-norm gradient,
progressive and cross-task re-selection, optimizer-state size, the code's quirks, and resume."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import parametrize

from clbench.errors import UsageError
from clbench.strategies.sara import SaRA, SaRAAdamW, SaRAConfig, SparseUpdate, selection_threshold
from clbench.strategies.sara.sparse import attach, detach_slot, nuclear_gradient
from clbench.training import train_task
from conftest import interrupted_run_resumes_identically, strategy_on


def _linear(m: int = 80, n: int = 70, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(n, m)


def _data(n: int = 70, m: int = 80, steps: int = 20, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(16, n, generator=gen), torch.randn(16, m, generator=gen)) for _ in range(steps)]


def test_mask_is_exactly_the_entries_strictly_below_the_threshold() -> None:
    w = torch.tensor([[0.5, -0.1, 0.2], [0.2, -0.2, 0.05]])
    update = SparseUpdate(w, w.abs() < 0.2)
    assert update.selected_mask().view(2, 3).tolist() == [[False, True, False], [False, False, True]]  # |w| = θ is not selected
    layer = _linear()
    theta = selection_threshold([layer.weight], 0.1)
    slot = attach("fc", layer, "weight", layer.weight.detach().abs() < theta)
    assert torch.equal(slot.update.selected_mask().view_as(layer.weight), slot.original.detach().abs() < theta)


def test_budget_selects_exactly_k_entries_and_fewer_on_ties() -> None:
    torch.manual_seed(2)
    weights = [torch.randn(30, 20), torch.randn(10, 5)]
    for k in (1, 37, 300):
        theta = selection_threshold(weights, k)
        assert sum(int((w.abs() < theta).sum()) for w in weights) == k
    theta = selection_threshold(weights, 0.25)
    assert sum(int((w.abs() < theta).sum()) for w in weights) == round(0.25 * 650)
    tied = [torch.tensor([0.1, 0.2, 0.2, 0.3])]
    assert int((tied[0].abs() < selection_threshold(tied, 2)).sum()) == 1  # |w| < 0.2 is strict: the tie is left out


def test_storage_is_indices_or_a_bool_mask_whichever_is_smaller() -> None:
    w = torch.randn(40, 40)
    sparse = SparseUpdate(w, w.abs() < 0.05)
    dense = SparseUpdate(w, w.abs() < 3.0)
    assert sparse.index is not None and sparse.selection_bytes() == 8 * sparse.count
    assert dense.mask is not None and dense.selection_bytes() == w.numel()


def _train_sparse(layer: nn.Linear, theta: float, data: list, lam: float = 0.0, wd: float = 0.01, inplace: bool = False) -> SaRAAdamW:
    slot = attach("fc", layer, "weight", layer.weight.detach().abs() < theta, inplace=inplace)
    opt = SaRAAdamW([slot.update.values], lr=1e-2, weight_decay=wd)
    if lam:
        def penalty() -> None:
            matrix = slot.update.write(torch.zeros_like(slot.original), slot.update.values.detach())
            g = lam * slot.update.gather(nuclear_gradient(matrix))
            slot.update.values.grad = g if slot.update.values.grad is None else slot.update.values.grad + g
        opt.penalty = penalty
    for x, y in data:
        opt.zero_grad()
        F.mse_loss(layer(x), y).backward()
        opt.step()
    detach_slot(slot)
    return opt


def test_unselected_entries_stay_bit_identical_through_decay_and_the_nuclear_step() -> None:
    layer = _linear()
    before = layer.weight.detach().clone()
    theta = selection_threshold([layer.weight], 0.2)
    _train_sparse(layer, theta, _data(), lam=5e-3, wd=0.1)
    frozen = before.abs() >= theta
    assert torch.equal(layer.weight.detach()[frozen], before[frozen])
    assert not torch.equal(layer.weight.detach()[~frozen], before[~frozen])
    assert type(layer) is nn.Linear and not parametrize.is_parametrized(layer)


def test_full_selection_reduces_to_adamw_on_the_whole_weight() -> None:
    sparse_layer, dense_layer = _linear(), _linear()
    data = _data()
    _train_sparse(sparse_layer, float(sparse_layer.weight.detach().abs().max()) * 2, data)
    dense_layer.bias.requires_grad_(False)
    adam = torch.optim.AdamW([dense_layer.weight], lr=1e-2, weight_decay=0.01)
    for x, y in data:
        adam.zero_grad()
        F.mse_loss(dense_layer(x), y).backward()
        adam.step()
    torch.testing.assert_close(sparse_layer.weight, dense_layer.weight, rtol=1e-5, atol=1e-6)


def test_sparse_path_equals_the_dense_masked_path_and_the_inplace_write() -> None:
    data = _data()
    sparse, inplace, dense = _linear(), _linear(), _linear()
    theta = selection_threshold([sparse.weight], 0.1)
    mask = dense.weight.detach().abs() < theta
    _train_sparse(sparse, theta, data)
    _train_sparse(inplace, theta, data, inplace=True)
    dense.bias.requires_grad_(False)
    adam = torch.optim.AdamW([dense.weight], lr=1e-2, weight_decay=0.01)
    for x, y in data:  # adamw2.py: dense AdamW, then restore the unselected entries
        old = dense.weight.detach().clone()
        adam.zero_grad()
        F.mse_loss(dense(x), y).backward()
        adam.step()
        with torch.no_grad():
            dense.weight.copy_(torch.where(mask, dense.weight, old))
    torch.testing.assert_close(sparse.weight, dense.weight, rtol=1e-5, atol=1e-6)
    assert torch.equal(sparse.weight, inplace.weight)


def test_nuclear_gradient_matches_autograd_on_the_selected_entries() -> None:
    gen = torch.Generator().manual_seed(3)
    w = torch.randn(9, 7, generator=gen, dtype=torch.float64)
    mask = torch.rand(9, 7, generator=gen) < 0.6
    values = w[mask].clone().requires_grad_(True)
    x = torch.zeros_like(w).masked_scatter(mask, values)
    torch.linalg.matrix_norm(x, "nuc").backward()
    expected = nuclear_gradient(x.detach())[mask]
    torch.testing.assert_close(values.grad, expected, rtol=1e-10, atol=1e-10)
    assert float(nuclear_gradient(torch.zeros(4, 3)).abs().max()) == 0.0  # zero singular directions get no push


def _small_setup(bench: Path, **config: object) -> tuple[SaRA, object, object]:
    return strategy_on(SaRA, SaRAConfig(**config), bench, iterations=20, lr=0.01)  # type: ignore[arg-type, return-value]


def _train(strategy: SaRA, stream: object, settings: object, task: int) -> None:
    exp = stream.tasks[task]  # type: ignore[attr-defined]
    strategy.before_task(exp)
    train_task(strategy, strategy.backbone, exp.train, exp, settings, torch.Generator().manual_seed(task), progress=False)  # type: ignore[arg-type]
    strategy.after_task(exp)


def test_progressive_step_shrinks_the_selection_freezes_grown_entries_and_resets_adam(small_digits: Path) -> None:
    strategy, stream, settings = _small_setup(small_digits, budget=0.1, progressive_frac=1.0)  # no automatic step
    exp = stream.tasks[0]  # type: ignore[attr-defined]
    strategy.before_task(exp)
    optimizer = strategy.make_optimizer(strategy.trainable_parameters(), settings)  # type: ignore[arg-type]
    fc1 = strategy.backbone.model.fc1
    for _ in range(15):
        optimizer.zero_grad()
        strategy.backbone.loss(strategy.backbone.collate([exp.train[i] for i in range(16)])).backward()
        optimizer.step()
    slot = strategy.slots[0]
    old_mask = slot.update.selected_mask().clone()
    current = slot.current()
    assert optimizer.state[slot.update.values]
    dropped = strategy.progressive_reselect()
    new_mask = slot.update.selected_mask()
    assert torch.equal(new_mask, old_mask & (current.abs().reshape(-1) < strategy.threshold))
    assert dropped == int(old_mask.sum() - new_mask.sum()) > 0
    assert not optimizer.state.get(slot.update.values)
    frozen_now = (old_mask & ~new_mask).view_as(current)
    before = slot.current()
    for _ in range(5):
        optimizer.zero_grad()
        strategy.backbone.loss(strategy.backbone.collate([exp.train[i] for i in range(16)])).backward()
        optimizer.step()
    after = slot.current()
    assert torch.equal(after[frozen_now], before[frozen_now]) and torch.equal(after[frozen_now], current[frozen_now])
    assert fc1.parametrizations.weight.original.requires_grad is False


def test_reselection_at_each_task_only_shrinks_the_pool_and_telemetry_counts_it(small_digits: Path) -> None:
    strategy, stream, settings = _small_setup(small_digits, budget=0.2)
    counts = []
    for t in range(3):
        _train(strategy, stream, settings, t)
        counts.append((strategy.task_log[-1]["selected_task_start"], strategy.task_log[-1]["selected"]))
    starts = [c[0] for c in counts]
    ends = [c[1] for c in counts]
    assert all(e <= s for s, e in counts) and all(starts[i + 1] <= ends[i] for i in range(2))
    assert starts[-1] < starts[0]
    tele = strategy.telemetry()["sara"]
    assert tele["selected"] == ends[-1] and tele["reselections"] == 2 + 3  # two task starts after the first, one progressive per task
    assert tele["frozen_at_task_start"] == ends[1] - starts[2]
    assert tele["selected_fraction"] == pytest.approx(ends[-1] / (32 * 64))
    fixed, stream2, settings2 = _small_setup(small_digits, budget=0.2, boundary="fixed_mask", progressive_frac=0.0)
    for t in range(2):
        _train(fixed, stream2, settings2, t)
    assert fixed.task_log[0]["selected_task_start"] == fixed.task_log[1]["selected_task_start"]


def test_optimizer_state_and_gradients_scale_with_the_selection() -> None:
    sizes = {}
    for budget in (0.02, 0.08):
        layer = _linear(seed=4)
        theta = selection_threshold([layer.weight], budget)
        selected = int((layer.weight.detach().abs() < theta).sum())
        opt = _train_sparse(layer, theta, _data(steps=1))
        values = opt.param_groups[0]["params"][0]
        assert values.numel() == values.grad.numel() == selected  # type: ignore[union-attr]
        assert opt.state_bytes() == 2 * 4 * selected + 4  # exp_avg and exp_avg_sq (fp32) and the step
        sizes[budget] = selected
    assert sizes[0.08] == 4 * sizes[0.02] == round(0.08 * 80 * 70)


def test_empty_selection_is_a_clear_error(small_digits: Path) -> None:
    with pytest.raises(UsageError, match="selects no weight"):
        _small_setup(small_digits, threshold=1e-12)


def test_saved_values_and_threshold_rebuild_the_same_model() -> None:
    pretrained = _linear(seed=5)
    trained = copy.deepcopy(pretrained)
    theta = selection_threshold([trained.weight], 0.15)
    slot = attach("fc", trained, "weight", trained.weight.detach().abs() < theta)
    opt = SaRAAdamW([slot.update.values], lr=1e-2)
    for x, y in _data(n=70, m=80, steps=5):
        opt.zero_grad()
        F.mse_loss(trained(x), y).backward()
        opt.step()
    saved = {"threshold": theta, "values": slot.update.values.detach().clone()}
    x = torch.randn(3, 70)
    expected = trained(x)
    rebuilt = copy.deepcopy(pretrained)  # the mask is recomputed from the pretrained weights
    update = SparseUpdate(rebuilt.weight, rebuilt.weight.detach().abs() < saved["threshold"])
    with torch.no_grad():
        rebuilt.weight.copy_(update.write(rebuilt.weight.detach(), saved["values"]))
    assert torch.equal(rebuilt(x), expected)


def test_faithful_quirks_read_abs_values_once_and_skip_the_progressive_update(small_digits: Path) -> None:
    strategy, stream, settings = _small_setup(small_digits, budget=0.1, faithful_quirks=True)
    exp = stream.tasks[0]  # type: ignore[attr-defined]
    strategy.before_task(exp)
    slot = strategy.slots[0]
    with torch.no_grad():
        assert torch.equal(slot.module.weight.reshape(-1)[slot.update.index], slot.update.values.abs())
    optimizer = strategy.make_optimizer(strategy.trainable_parameters(), settings)  # type: ignore[arg-type]
    optimizer.zero_grad()
    strategy.backbone.loss(strategy.backbone.collate([exp.train[i] for i in range(8)])).backward()
    optimizer.step()
    strategy.after_step(0, exp)
    assert not slot.update.use_abs
    strategy.progressive_step = 2
    strategy.after_step(1, exp)  # the progressive point: the next update is skipped ...
    assert optimizer.skip_next and strategy.pending_reselect
    values = slot.update.values.detach().clone()
    optimizer.zero_grad()
    strategy.backbone.loss(strategy.backbone.collate([exp.train[i] for i in range(8)])).backward()
    optimizer.step()
    assert torch.equal(slot.update.values.detach(), values)
    strategy.after_step(2, exp)  # ... and the re-selection happens inside it, arming |w| again
    assert slot.update.use_abs and not strategy.pending_reselect


def test_run_interrupted_after_a_task_resumes_to_identical_results(small_digits: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    full = interrupted_run_resumes_identically(SaRA, "sara", small_digits, {"iterations": "12", "budget": "0.2"}, tmp_path, monkeypatch)
    assert full["telemetry"][-1]["sara"]["selected"] > 0
