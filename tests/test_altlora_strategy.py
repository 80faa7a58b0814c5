"""The altlora strategy on real components: fresh per-factor state at every task boundary, the
merge-and-reinit boundary, carried factors, factor telemetry, and a resumed run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from clbench.strategies.altlora import AltLoRA, AltLoRAConfig
from clbench.training import train_task
from conftest import interrupted_run_resumes_identically, strategy_on


def _setup(bench: Path, **config: object) -> tuple[AltLoRA, object, object]:
    return strategy_on(AltLoRA, AltLoRAConfig(**config), bench, iterations=10, lr=0.01)  # type: ignore[arg-type, return-value]


def _train(strategy: AltLoRA, stream: object, settings: object, task: int) -> torch.optim.Optimizer:
    exp = stream.tasks[task]  # type: ignore[attr-defined]
    strategy.before_task(exp)
    captured = {}
    original = strategy.make_optimizer

    def capture(params: list, s: object) -> torch.optim.Optimizer:
        captured["opt"] = original(params, s)  # type: ignore[arg-type]
        return captured["opt"]

    strategy.make_optimizer = capture  # type: ignore[method-assign]
    train_task(strategy, strategy.backbone, exp.train, exp, settings, torch.Generator().manual_seed(task), progress=False)  # type: ignore[arg-type]
    strategy.make_optimizer = original  # type: ignore[method-assign]
    strategy.after_task(exp)
    return captured["opt"]


def test_every_task_starts_from_fresh_factor_state_and_telemetry_reports_conditioning(small_digits: Path) -> None:
    strategy, stream, settings = _setup(small_digits)
    first = _train(strategy, stream, settings, 0)
    layer = strategy.adapters["fc1"]
    assert first.state[layer.lora_A]["step"] == 10 and float(first.state[layer.lora_A]["b_prev"].abs().sum()) > 0
    fresh = strategy.make_optimizer(strategy.trainable_parameters(), settings)  # type: ignore[arg-type]
    assert not fresh.state  # moments, step counts and stored factors all start over
    tele = strategy.telemetry()["altlora"]
    assert tele["cond_A"]["fc1"] > 1 and tele["cond_B"]["fc1"] > 1 and tele["inverse_fallbacks"] == 0
    assert tele["adapter_update_norm"] > 0 and tele["norm_B_mean"] > 0


def test_carried_factors_seed_the_next_task_transport(small_digits: Path) -> None:
    strategy, stream, settings = _setup(small_digits, carry_old_factors=True)
    first = _train(strategy, stream, settings, 0)
    layer = strategy.adapters["fc1"]
    b_last = first.state[layer.lora_A]["b_prev"]  # B as the last A-step saw it, kept by the official reset_state()
    seeded = strategy.make_optimizer(strategy.trainable_parameters(), settings)  # type: ignore[arg-type]
    state = seeded.state[layer.lora_A]
    assert state["step"] == 0 and float(state["exp_avg"].abs().sum()) == 0
    torch.testing.assert_close(state["b_prev"], b_last)


def test_merge_reinit_keeps_the_function_and_restarts_the_adapter(small_digits: Path) -> None:
    strategy, stream, settings = _setup(small_digits, boundary="merge_reinit")
    exp = stream.tasks[0]  # type: ignore[attr-defined]
    _train(strategy, stream, settings, 0)
    batch = strategy.backbone.collate([exp.test[i] for i in range(8)])
    layer = strategy.adapters["fc1"]
    assert float(layer.lora_B.detach().abs().max()) == 0.0
    before_cond = strategy.telemetry()["altlora"]["cond_B"]["fc1"]
    assert before_cond is not None  # reported from the trained factors, before the merge
    out = strategy.backbone.model(batch["x"])
    _train(strategy, stream, settings, 1)
    assert not torch.equal(strategy.backbone.model(batch["x"]), out)


def test_runs_end_to_end_and_resumes_identically(small_digits: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    full = interrupted_run_resumes_identically(AltLoRA, "altlora", small_digits, {"iterations": "8", "lr": "0.01"}, tmp_path, monkeypatch)
    assert full["telemetry"][-1]["altlora"]["cond_A"]["fc1"] > 1
