"""The vision benchmark catalog: every file parses with the papers' protocols (orders, shots, class
splits), ``clbench show`` prints tasks, class counts, protocol and backbone, a real benchmark
without its data exits 2 with one line, and the offline Fashion-MNIST benchmark runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clbench import registry
from clbench.data.vision_base import task_class_count
from clbench.data.vision_folders import DEBIAN_FASHION_MNIST

ORDER_I = ["aircraft", "caltech101", "cifar100", "dtd", "eurosat", "flowers", "food", "mnist", "oxford-pet", "stanford-cars", "sun397"]
ORDER_II = ["stanford-cars", "food", "mnist", "oxford-pet", "flowers", "sun397", "aircraft", "caltech101", "dtd", "eurosat", "cifar100"]
XTAIL = ["aircraft", "caltech101", "dtd", "eurosat", "flowers", "food", "mnist", "oxford-pet", "stanford-cars", "sun397"]
VISION = ["mtil", "mtil-order2", "mtil-5shot", "mtil-order2-5shot", "xtail", "cifar100-split10", "imagenet-r-split5", "imagenet-r-split10",
          "imagenet-r-split20", "domainnet-split5", "fashion-split"]


def spec(name: str):
    return registry.load_benchmark(name)[0]


@pytest.mark.parametrize(("name", "order", "shots"), [("mtil", ORDER_I, None), ("mtil-order2", ORDER_II, None),
                                                     ("mtil-5shot", ORDER_I, 5), ("mtil-order2-5shot", ORDER_II, 5)])
def test_mtil_orders_and_shots(name: str, order: list[str], shots: int | None) -> None:
    s = spec(name)
    assert [t.name for t in s.tasks] == order
    assert s.protocol == "task-incremental" and s.backbone == "clip:ViT-B-16@openai"
    assert all(t.options.get("k_shot") == shots for t in s.tasks)
    assert s.train.iterations == (1000 if shots is None else 500)
    assert sum(task_class_count(t.loader, t.options) for t in s.tasks) == 1201


def test_xtail_is_16_shot_task_agnostic_over_1101_classes() -> None:
    s = spec("xtail")
    assert [t.name for t in s.tasks] == XTAIL and s.protocol == "task-agnostic"
    assert all(t.options["k_shot"] == 16 for t in s.tasks)
    assert sum(task_class_count(t.loader, t.options) for t in s.tasks) == 1101


@pytest.mark.parametrize(("name", "loader", "tasks", "per_task"), [("cifar100-split10", "cifar100", 10, 10), ("imagenet-r-split5", "imagenet-r", 5, 40),
                                                                  ("imagenet-r-split10", "imagenet-r", 10, 20), ("imagenet-r-split20", "imagenet-r", 20, 10),
                                                                  ("domainnet-split5", "domainnet", 5, 69)])
def test_class_incremental_splits_cover_the_classes_in_order(name: str, loader: str, tasks: int, per_task: int) -> None:
    s = spec(name)
    assert s.protocol == "class-incremental" and s.backbone == "vit:vit_base_patch16_224.augreg_in21k"
    assert len(s.tasks) == tasks and all(t.loader == loader for t in s.tasks)
    classes = [c for t in s.tasks for c in t.options["classes"]]
    assert all(len(t.options["classes"]) == per_task for t in s.tasks)
    assert classes == list(range(tasks * per_task))  # CoSO's configs keep the dataset order (shuffle = false)


def test_list_and_show_describe_the_catalog(cli) -> None:
    status, out, _ = cli("list", "benchmarks")
    assert status == 0 and all(f"  {name} " in out for name in VISION)
    status, out, _ = cli("show", "mtil")
    assert status == 0
    assert "protocol: task-incremental" in out and "default backbone: clip:ViT-B-16@openai" in out
    assert "1201 classes in all" in out and "397 classes  sun397" in out and "100 classes  aircraft" in out
    status, out, _ = cli("show", "imagenet-r-split20")
    assert status == 0 and "classes=190..199" in out and "10 classes" in out


def test_real_benchmark_without_data_fails_with_one_line_and_no_run_dir(cli, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    (tmp_path / "data").mkdir()  # exists but holds no dataset (a missing --data-root is its own error)
    status, _, stderr = cli("run", "xtail", "-s", "zeroshot", "--data-root", tmp_path / "data", "--out", out, "--no-progress")
    assert status == 2
    assert len(stderr.strip().splitlines()) == 1 and "FGVC-Aircraft" in stderr and str(tmp_path / "data") in stderr
    assert not out.exists()


SMALL_FASHION = """version = 1
description = "Two Fashion-MNIST tasks read from the Debian package, 300 training images per class."
protocol = "class-incremental"
backbone = "mlp:32"
[train]
epochs = 3
batch_size = 64
lr = 0.003
[defaults]
train_limit = 300
[[tasks]]
name = "tops"
loader = "fashion-mnist"
options = { classes = [0, 2] }
[[tasks]]
name = "shoes"
loader = "fashion-mnist"
options = { classes = [7, 9] }
"""


@pytest.mark.skipif(not DEBIAN_FASHION_MNIST.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
def test_fashion_mnist_from_the_debian_package_runs_end_to_end(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLBENCH_DATA_ROOT", raising=False)
    bench = tmp_path / "fashion-small.toml"
    bench.write_text(SMALL_FASHION, encoding="utf-8")
    status, _, stderr = cli("run", bench, "-s", "finetune", "--out", tmp_path / "runs", "--no-progress", "--device", "cpu")
    assert status == 0, stderr
    results = json.loads((tmp_path / "runs" / "fashion-small" / "finetune" / "seed-0" / "results.json").read_text())
    after_first, after_second = results["matrix"]["values"][1:]
    assert after_first[0] > 0.8 and after_second[1] > 0.8  # each task is learned when trained
    assert results["tasks"][0]["examples"] == 600


@pytest.mark.slow
@pytest.mark.skipif(not DEBIAN_FASHION_MNIST.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
def test_fashion_split_runs_offline_end_to_end(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLBENCH_DATA_ROOT", raising=False)
    status, _, stderr = cli("run", "fashion-split", "-s", "finetune", "--backbone", "mlp:32", "--out", tmp_path, "--no-progress", "--device", "cpu")
    assert status == 0, stderr
    results = json.loads((tmp_path / "fashion-split" / "finetune" / "seed-0" / "results.json").read_text())
    last = results["matrix"]["values"][-1]
    assert results["status"] == "complete" and len(last) == 5
    assert last[-1] > 0.8  # the task just learned (2 classes) is learned well
