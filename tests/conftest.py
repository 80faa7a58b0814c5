"""Shared fixtures: offline environment, a CLI runner and small benchmark files."""

from __future__ import annotations

import os
import sys
from pathlib import Path

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
