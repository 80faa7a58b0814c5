"""``clbench run`` on an MTIL-protocol benchmark with a tiny CLIP (saved and reloaded through
``pretrained=<file>``) and small fixture datasets in torchvision's formats: zero-shot and LoRA
runs finish with the MTIL metrics; missing data or weights exit 2 and leave no run directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from test_vision_fixtures import write_two_domain_mtil


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_two_domain_mtil(tmp_path_factory.mktemp("clip-e2e"))


def _results(out: Path, strategy: str, folder: str = "seed-0") -> dict:
    return json.loads((out / "mtil-tiny" / strategy / folder / "results.json").read_text())


def test_zeroshot_and_lora_run_end_to_end(cli, setup: dict[str, Path]) -> None:
    out = setup["base"] / "runs"
    status, stdout, stderr = cli("run", setup["bench"], "-s", "zeroshot,lora", "--data-root", setup["data"], "--out", out, "--no-progress",
                                 "--device", "cpu", "-S", "lora.rank=2")
    assert status == 0, stderr
    zeroshot, lora = _results(out, "zeroshot"), _results(out, "lora", "seed-0-S-rank=2")
    for results in (zeroshot, lora):
        assert results["status"] == "complete" and results["backbone"]["spec"].startswith("clip:")
        values = results["matrix"]["values"]
        assert len(values) == 3 and all(len(row) == 2 and all(0.0 <= v <= 1.0 for v in row) for row in values)
        assert {"mtil_transfer", "mtil_avg", "mtil_last"} <= set(results["metrics"])
    assert zeroshot["matrix"]["values"][0] == zeroshot["matrix"]["values"][2]  # never trained
    assert lora["matrix"]["values"][0] == zeroshot["matrix"]["values"][0]  # same weights before training
    assert lora["tasks"][0]["steps"] == 2 and lora["tasks"][0]["examples"] == 12  # 4 classes x 3 shots
    assert lora["backbone"]["trainable_parameters"] > 0


def test_missing_data_exits_2_without_a_run_directory(cli, setup: dict[str, Path], tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "runs"
    status, _, stderr = cli("run", setup["bench"], "-s", "zeroshot", "--data-root", empty, "--out", out, "--no-progress")
    assert status == 2
    line = stderr.strip()
    assert "\n" not in line and "MNIST" in line and str(empty / "MNIST") in line and "--allow-download" in line
    assert not out.exists()


def test_missing_weights_exit_2_without_a_run_directory(cli, setup: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from clbench.backbones import clip_loading

    monkeypatch.setattr(clip_loading, "_cached_pretrained_file", lambda cfg: None)
    monkeypatch.delenv(clip_loading.ALLOW_DOWNLOAD_ENV, raising=False)
    out = tmp_path / "runs"
    status, _, stderr = cli("run", setup["bench"], "-s", "zeroshot", "--backbone", "clip:ViT-B-16@openai", "--data-root", setup["data"],
                            "--out", out, "--no-progress")
    assert status == 2 and "ViT-B-16@openai" in stderr and "CLBENCH_ALLOW_DOWNLOAD" in stderr
    assert not out.exists()
