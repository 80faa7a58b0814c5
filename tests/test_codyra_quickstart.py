"""CoDyRA on the quickstart benchmark (SmolLM2-135M from the offline GGUF wheel): minutes on a CPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from clbench import registry
from clbench.runner import RunOptions, run


@pytest.mark.slow
def test_quickstart_end_to_end(tmp_path: Path) -> None:
    results = run(RunOptions(benchmark="quickstart", strategy="codyra", out=tmp_path, seed=0, progress=False))
    assert results["status"] == "complete"
    pretrained = registry.build_backbone(results["backbone"]["spec"]).describe()
    assert results["backbone"]["parameters"] == pretrained["parameters"]  # merged: no extra parameters
    trained = [t for t in results["tasks"] if "steps" in t]
    assert trained and all(t["steps"] > 0 for t in trained)
    for entry in results["telemetry"]:
        report = entry["codyra"]
        grid = report["effective_rank_grid"]
        assert sorted(r.rsplit(".", 1)[-1] for r in grid["rows"]) == ["k_proj", "o_proj", "q_proj", "v_proj"]
        assert grid["columns"] == list(range(len(grid["columns"]))) and len(report["effective_rank"]) == 4 * len(grid["columns"])
        assert 0 < report["effective_rank_mean"] <= 16  # the official κ prunes few ranks on short tasks, never all
        assert report["kappa_max"] == 0.005 and report["delta_w_fro_total"] > 0  # the official κ_max, not rescaled
