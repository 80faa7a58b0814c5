"""The LoRA-family baselines (olora, inflora, smora, flylora) on CLIP: a tiny open_clip model saved
and reloaded through ``pretrained=<file>``, two MTIL-style domains of fixture images, the
strategies' default CLIP targets (q, v; InfLoRA k, v) in both encoders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from test_vision_fixtures import write_two_domain_mtil


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_two_domain_mtil(tmp_path_factory.mktemp("clip-baselines"), "tiny-clip-baselines")


FOLDERS = {"olora": "seed-0-S-rank=2", "inflora": "seed-0-S-rank=2", "smora": "seed-0-S-k=2,rank=4", "flylora": "seed-0-S-k=2,rank=4"}


@pytest.mark.slow  # four CLIP runs: minutes on a loaded 2-core machine
def test_lora_family_baselines_run_on_clip(cli, tiny_clip: dict[str, Path]) -> None:
    out = tiny_clip["base"] / "runs"
    status, _, stderr = cli("run", tiny_clip["bench"], "-s", "olora,inflora,smora,flylora", "--data-root", tiny_clip["data"], "--out", out,
                            "--no-progress", "--device", "cpu", "-S", "olora.rank=2", "-S", "inflora.rank=2", "-S", "smora.rank=4",
                            "-S", "smora.k=2", "-S", "flylora.rank=4", "-S", "flylora.k=2")
    assert status == 0, stderr
    for strategy in ("olora", "inflora", "smora", "flylora"):
        results = json.loads((out / "mtil-tiny" / strategy / FOLDERS[strategy] / "results.json").read_text())
        assert results["status"] == "complete", strategy
        values = results["matrix"]["values"]
        assert len(values) == 3 and all(0.0 <= v <= 1.0 for row in values for v in row)
        telemetry = results["telemetry"][-1]
        assert telemetry["adapted_layers"] > 0  # q and v (InfLoRA: k and v) of both encoders
        assert results["tasks"][0]["steps"] == 2
    inflora = json.loads((out / "mtil-tiny" / "inflora" / FOLDERS["inflora"] / "results.json").read_text())
    assert inflora["telemetry"][-1]["bank_rank_per_layer"] == 4  # two tasks of rank 2 frozen in the bank
