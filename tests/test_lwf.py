"""LwF: the distillation term is zero when student = teacher and equals a hand-computed KL,
old heads are chosen per protocol, the teacher is taken at task start and is frozen."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from clbench.api import RunContext, TrainSettings
from clbench.api.benchmark import load_benchmark_file
from clbench.backbones.classic import build_mlp
from clbench.data import build_stream
from clbench.strategies.lwf import LwF, LwFConfig, distillation_kl


def _strategy(bench: Path, protocol: str | None = None, **config: object) -> LwF:
    spec = load_benchmark_file(bench)
    if protocol:
        import dataclasses

        spec = dataclasses.replace(spec, protocol=protocol)
    stream = build_stream(spec)
    torch.manual_seed(0)
    backbone = build_mlp("mlp:16")
    backbone.bind(stream)
    strategy = LwF(LwFConfig(**config), RunContext(stream=stream, train=TrainSettings(), device=torch.device("cpu"), seed=0))
    strategy.setup(backbone)
    return strategy


def test_kl_is_zero_for_equal_logits_and_matches_a_hand_computed_value() -> None:
    logits = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    assert float(distillation_kl(logits, logits.clone(), 2.0)) == pytest.approx(0.0, abs=1e-7)
    teacher = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
    student = [[0.0, 1.0, 1.0], [2.0, 0.0, 0.0]]
    expected = 0.0
    for t_row, s_row in zip(teacher, student, strict=True):
        p = [math.exp(v / 2) for v in t_row]
        q = [math.exp(v / 2) for v in s_row]
        p = [v / sum(p) for v in p]
        q = [v / sum(q) for v in q]
        expected += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))
    expected /= 2
    got = float(distillation_kl(torch.tensor(teacher), torch.tensor(student), 2.0))
    assert got == pytest.approx(expected, rel=1e-5)


def test_teacher_is_a_frozen_copy_taken_at_task_start(small_digits: Path) -> None:
    strategy = _strategy(small_digits)
    tasks = strategy.ctx.stream.tasks
    strategy.before_task(tasks[0])
    assert strategy.teacher is None  # nothing to distill on the first task
    strategy.before_task(tasks[1])
    assert strategy.teacher is not None and strategy.teacher.model is not strategy.model
    assert not any(p.requires_grad for p in strategy.teacher.model.parameters())
    batch = strategy.backbone.collate(tasks[1].train.__getitems__(list(range(8))))
    assert float(strategy.distillation(batch).detach()) == pytest.approx(0.0, abs=1e-7)  # student = teacher
    loss = strategy.loss(batch, tasks[1])
    loss.backward()
    assert float(loss) == pytest.approx(float(strategy.backbone.loss(batch)), rel=1e-6)
    with torch.no_grad():
        strategy.model.head.weight.add_(torch.randn_like(strategy.model.head.weight))
    assert float(strategy.distillation(batch)) > 0
    assert strategy.telemetry()["lwf_old_tasks"] == 1


def test_class_incremental_distills_the_union_of_old_classes(small_digits: Path) -> None:
    strategy = _strategy(small_digits)
    tasks = strategy.ctx.stream.tasks
    strategy.before_task(tasks[2])
    batch = strategy.backbone.collate(tasks[2].train.__getitems__(list(range(8))))
    with torch.no_grad():
        strategy.model.head.weight.add_(torch.randn_like(strategy.model.head.weight))
        old = strategy.teacher.model(batch["x"])[:, [0, 1, 2, 3]]
        new = strategy.model(batch["x"])[:, [0, 1, 2, 3]]
    assert float(strategy.distillation(batch)) == pytest.approx(float(distillation_kl(old, new, 2.0)), rel=1e-5)


def test_task_incremental_distills_each_old_head(small_digits: Path) -> None:
    strategy = _strategy(small_digits, protocol="task-incremental")
    tasks = strategy.ctx.stream.tasks
    strategy.before_task(tasks[2])
    batch = strategy.backbone.collate(tasks[2].train.__getitems__(list(range(8))))
    with torch.no_grad():
        strategy.model.head.weight.add_(torch.randn_like(strategy.model.head.weight))
        old = strategy.teacher.model(batch["x"])
        new = strategy.model(batch["x"])
        heads = [(0, 1), (2, 3)]
        expected = sum(float(distillation_kl(old[:, list(h)], new[:, list(h)], 2.0)) for h in heads) / 2
    assert float(strategy.distillation(batch)) == pytest.approx(expected, rel=1e-5)


@pytest.mark.slow  # end-to-end training runs; the mechanism tests above run by default
def test_distillation_changes_training_on_task_incremental_digits(small_digits: Path, tmp_path: Path) -> None:
    from clbench.runner import RunOptions, run

    text = small_digits.read_text().replace('protocol = "class-incremental"', 'protocol = "task-incremental"')
    bench = tmp_path / "digits-ti.toml"
    bench.write_text(text)
    result = run(RunOptions(benchmark=str(bench), strategy="lwf", out=tmp_path / "runs", progress=False, overrides={"lwf_lambda": "2"}))
    assert result["status"] == "complete"
    kls = [t["lwf_distill_kl"] for t in result["telemetry"]]
    assert kls[0] is None and all(k is not None and k > 0 for k in kls[1:])
    assert min(result["matrix"]["values"][-1]) > 0.8  # multi-head digits: old heads survive
