"""Replay: the reservoir stays uniform over the stream (chi-square), is seeded, respects its
capacity and round-trips its state; every batch mixes memory and current examples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats
from torch.utils.data import DataLoader

from clbench.api import ExampleListDataset, RunContext, TensorTaskDataset, TrainSettings
from clbench.api.benchmark import load_benchmark_file
from clbench.backbones.classic import build_mlp
from clbench.data import build_stream
from clbench.strategies.replay import Replay, ReplayConfig, ReplayMixDataset, gather_examples
from clbench.strategies.replay.buffer import ReservoirBuffer

TASK_SIZES = (30, 50, 20, 100)  # uneven tasks: uniformity must hold per example, not per task


def _fill(capacity: int, seed: int) -> ReservoirBuffer:
    buffer = ReservoirBuffer(capacity)
    for task, size in enumerate(TASK_SIZES):
        buffer.offer(task, size, torch.Generator().manual_seed(seed * 100 + task))
    return buffer


def test_reservoir_inclusion_is_uniform_over_the_stream() -> None:
    """Over 1500 seeded runs every one of the 200 examples is kept about 1500 * 20/200 times."""
    capacity, runs = 20, 1500
    offsets = np.cumsum((0,) + TASK_SIZES[:-1])
    counts = np.zeros(sum(TASK_SIZES))
    for seed in range(runs):
        buffer = _fill(capacity, seed)
        assert len(buffer) == capacity and buffer.seen == sum(TASK_SIZES)
        assert len(set(zip(buffer.tasks, buffer.indices, strict=True))) == capacity  # no duplicates
        for task, index in zip(buffer.tasks, buffer.indices, strict=True):
            counts[offsets[task] + index] += 1
    expected = runs * capacity / len(counts)
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    # Each count is Binomial(runs, 0.1); the statistic is ~ chi2 with 199 dof scaled by (1-p).
    p_value = stats.chi2.sf(chi2 / (1 - capacity / len(counts)), df=len(counts) - 1)
    assert p_value > 1e-3, (chi2, p_value)
    per_task = [counts[o:o + s].sum() / (runs * capacity) for o, s in zip(offsets, TASK_SIZES, strict=True)]
    np.testing.assert_allclose(per_task, np.array(TASK_SIZES) / sum(TASK_SIZES), atol=0.01)


def test_reservoir_is_seeded_and_round_trips() -> None:
    a, b, c = _fill(25, 3), _fill(25, 3), _fill(25, 4)
    assert (a.tasks, a.indices) == (b.tasks, b.indices)
    assert (a.tasks, a.indices) != (c.tasks, c.indices)
    restored = ReservoirBuffer(25)
    restored.load_state_dict(a.state_dict())
    assert (restored.tasks, restored.indices, restored.seen) == (a.tasks, a.indices, a.seen)
    small = ReservoirBuffer(500)
    for task, size in enumerate(TASK_SIZES):
        small.offer(task, size, torch.Generator().manual_seed(task))
    assert len(small) == sum(TASK_SIZES)  # under capacity every example is kept
    with pytest.raises(ValueError, match="slots"):
        ReservoirBuffer(10).load_state_dict(a.state_dict())


def test_every_batch_mixes_memory_and_current_examples() -> None:
    current = TensorTaskDataset(torch.zeros(40, 2), torch.zeros(40), task_id=1)
    memory = TensorTaskDataset(torch.ones(10, 2), torch.ones(10), task_id=0)
    mixed = ReplayMixDataset(current, memory, 4, torch.Generator().manual_seed(0))
    loader = DataLoader(mixed, batch_size=8, shuffle=True, collate_fn=lambda b: b)
    batches = list(loader)
    assert len(batches) == 5  # as many steps as the current task alone
    for batch in batches:
        assert int((batch["task_id"] == 1).sum()) == 8 and int((batch["task_id"] == 0).sum()) == 4
        assert torch.equal(batch["y"][batch["task_id"] == 0], torch.ones(4))
    examples = ExampleListDataset([{"prompt": f"p{i}", "answer": "a", "task_id": 1} for i in range(6)])
    old = ExampleListDataset([{"prompt": "old", "answer": "b", "task_id": 0}] * 3)
    listed = ReplayMixDataset(examples, old, 8, torch.Generator().manual_seed(0)).__getitems__([0, 1])
    assert [e["task_id"] for e in listed] == [1, 1, 0, 0, 0]  # replay count capped by the memory


def test_strategy_buffer_telemetry_and_memory(small_digits: Path) -> None:
    stream = build_stream(load_benchmark_file(small_digits))
    backbone = build_mlp("mlp:16")
    backbone.bind(stream)
    strategy = Replay(ReplayConfig(buffer_size=30), RunContext(stream=stream, train=TrainSettings(batch_size=8), device=torch.device("cpu"), seed=0))
    strategy.setup(backbone)
    tasks = stream.tasks
    assert strategy.training_data(tasks[0], tasks[:1]) is tasks[0].train
    strategy.after_task(tasks[0])
    strategy.after_task(tasks[1])
    memory = strategy.memory()
    assert len(memory) == 30 and set(memory.y.tolist()) <= {0, 1, 2, 3}
    for (task, index), label in zip(zip(strategy.buffer.tasks, strategy.buffer.indices, strict=True), memory.y.tolist(), strict=True):
        assert int(tasks[task].train.y[index]) == label
    telemetry = strategy.telemetry()
    assert telemetry["buffer_size"] == 30 and sum(telemetry["buffer_tasks"].values()) == 30
    assert sum(telemetry["buffer_classes"].values()) == 30
    data = strategy.training_data(tasks[2], tasks)
    assert isinstance(data, ReplayMixDataset) and data.replay_count == 8
    assert isinstance(gather_examples(stream.experiences, [0], [3]), TensorTaskDataset)


@pytest.mark.slow  # end-to-end training runs; the mechanism tests above run by default
def test_replay_keeps_old_classes_on_class_incremental_digits(small_digits: Path, tmp_path: Path) -> None:
    from clbench.runner import RunOptions, run

    common = {"benchmark": str(small_digits), "seed": 0, "progress": False}
    plain = run(RunOptions(strategy="finetune", out=tmp_path / "a", **common))
    replay = run(RunOptions(strategy="replay", out=tmp_path / "b", overrides={"buffer_size": "100"}, **common))
    assert replay["metrics"]["last_accuracy"] > plain["metrics"]["last_accuracy"] + 0.2
    assert replay["telemetry"][-1]["buffer_seen"] == sum(t["examples"] for t in replay["tasks"])
