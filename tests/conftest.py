"""Shared fixtures: offline environment, a CLI runner and small benchmark files."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):
    """Run ``clbench`` in-process; returns (exit status, stdout, stderr)."""
    from clbench.cli import main

    def invoke(*args: str) -> tuple[int, str, str]:
        status = main([str(a) for a in args])
        out = capsys.readouterr()
        return status, out.out, out.err

    return invoke


@pytest.fixture
def small_digits(tmp_path: Path) -> Path:
    """A 3-task class-incremental digits benchmark that trains in about a second."""
    path = tmp_path / "digits-small.toml"
    path.write_text(
        """version = 1
description = "Three tasks of split digits for fast tests."
protocol = "class-incremental"
backbone = "mlp:32"
strategies = ["finetune"]
[train]
epochs = 5
batch_size = 32
lr = 0.01
[[tasks]]
name = "a"
loader = "sklearn-digits"
options = { classes = [0, 1] }
[[tasks]]
name = "b"
loader = "sklearn-digits"
options = { classes = [2, 3] }
[[tasks]]
name = "c"
loader = "sklearn-digits"
options = { classes = [4, 5] }
""",
        encoding="utf-8",
    )
    return path


def python() -> str:
    return sys.executable


def stopped_in_task(monkeypatch: pytest.MonkeyPatch, task: int, options: Any) -> None:
    """Run ``options`` (a ``RunOptions``) and stop it with Ctrl-C as task ``task`` (1-based) starts
    training, so its checkpoint holds the tasks before it."""
    from clbench import runner

    real, calls = runner.train_task, {"n": 0}

    def stop(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == task:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(runner, "train_task", stop)
        with pytest.raises(KeyboardInterrupt):
            runner.run(options)


def interrupted_run_resumes_identically(strategy_cls: type, name: str, benchmark: Path, overrides: dict[str, str], out: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> dict:
    """Run ``name`` uninterrupted, then again killed after task 1 and resumed; assert both give the
    same matrix and telemetry. Returns the uninterrupted results."""
    from clbench.runner import RunOptions, run

    full = run(RunOptions(benchmark=str(benchmark), strategy=name, overrides=overrides, out=out / "full", progress=False))
    original = strategy_cls.after_task

    def crash_on_second_task(self: object, experience: object) -> None:
        if experience.index == 1:  # type: ignore[attr-defined]
            raise KeyboardInterrupt
        original(self, experience)

    monkeypatch.setattr(strategy_cls, "after_task", crash_on_second_task)
    with pytest.raises(KeyboardInterrupt):
        run(RunOptions(benchmark=str(benchmark), strategy=name, overrides=overrides, out=out / "cut", progress=False))
    monkeypatch.setattr(strategy_cls, "after_task", original)
    resumed = run(RunOptions(benchmark=str(benchmark), strategy=name, overrides=overrides, out=out / "cut", resume=True, progress=False))
    assert resumed["matrix"]["values"] == full["matrix"]["values"]
    assert resumed["telemetry"] == full["telemetry"]
    return full


def strategy_on(strategy_cls: type, config: object, benchmark: Path, backbone: str = "mlp:32", **train: object) -> tuple:
    """``(strategy, stream, settings)``: ``strategy_cls(config)`` set up on ``backbone`` bound to
    ``benchmark``'s stream, with the config's training overrides and then ``train`` applied."""
    import torch

    from clbench import registry
    from clbench.api import RunContext
    from clbench.data import build_stream

    spec, _ = registry.load_benchmark(str(benchmark))
    stream = build_stream(spec)
    model = registry.build_backbone(backbone)
    model.bind(stream)
    settings = spec.train.updated(**{**config.train_overrides(model.kind), **train})  # type: ignore[attr-defined]
    torch.manual_seed(0)
    strategy = strategy_cls(config, RunContext(stream=stream, train=settings, device=torch.device("cpu"), seed=0, benchmark=spec.name))
    strategy.setup(model)
    return strategy, stream, settings
