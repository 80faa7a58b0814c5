"""DataLoader workers: the same run gives the same matrix with 0 and 2 workers (augmentation seeded per batch)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from clbench.errors import UsageError
from clbench.loading import NumberedBatches, SeededCollate, loader_options
from clbench.preflight import RunOptions
from clbench.runner import run
from test_vision_fixtures import write_two_domain_mtil


def test_defaults_by_device_and_per_batch_seeds() -> None:
    assert loader_options(None, torch.device("cpu")).workers == 0 and not loader_options(None, torch.device("cpu")).pin_memory
    cuda = loader_options(None, torch.device("cuda"))
    assert 1 <= cuda.workers <= 8 and cuda.pin_memory
    assert loader_options(3, torch.device("cpu")).workers == 3
    batches = NumberedBatches([[4, 5], [6]])
    assert list(batches) == [[(0, 4), (0, 5)], [(1, 6)]] and list(batches)[0][0][0] == 2  # the count runs on across epochs
    draw = SeededCollate(lambda items: torch.rand(2), seed=7)
    before = torch.get_rng_state()
    assert torch.equal(draw((3, [])), draw((3, []))) and not torch.equal(draw((3, [])), draw((4, [])))
    assert torch.equal(torch.get_rng_state(), before)  # the run's own random stream is untouched


def test_workers_are_checked(small_digits: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--workers must be between 0 and 256, got -1"):
        run(RunOptions(benchmark=str(small_digits), strategy="finetune", out=tmp_path / "runs", workers=-1, progress=False))


def test_same_matrix_with_0_and_2_workers_on_a_clip_benchmark(tmp_path: Path) -> None:
    fixture = write_two_domain_mtil(tmp_path / "clip")
    results = [run(RunOptions(benchmark=str(fixture["bench"]), strategy="lora", out=tmp_path / f"w{workers}", data_root=fixture["data"], device="cpu",
                              overrides={"rank": "2"}, workers=workers, progress=False)) for workers in (0, 2)]
    assert results[0]["matrix"]["values"] == results[1]["matrix"]["values"]
    assert [t["loss_curve"] for t in results[0]["tasks"]] == [t["loss_curve"] for t in results[1]["tasks"]]  # the same augmented batches
    assert [r["environment"]["loader_workers"] for r in results] == [0, 2]
