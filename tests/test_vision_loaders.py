"""Image loaders on small fixtures in each dataset's real on-disk format: class selection, seeded
k-shot sampling, seeded splits, readable class names, lazy relabelling, missing-data errors."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from clbench.api.benchmark import BenchmarkSpec, TaskSpec
from clbench.api.stream import TensorTaskDataset
from clbench.data import LoaderContext, build_stream
from clbench.data import vision, vision_folders
from clbench.data.vision_base import ImageTaskDataset, select_examples
from clbench.errors import MissingAssetError, UsageError
from test_vision_fixtures import write_domainnet, write_eurosat, write_image_folder, write_mnist_like

WNIDS = ["n01443537", "n01484850", "n01494475"]  # goldfish, great white shark, hammerhead (ImageNet ids)


def ctx(root: Path | None, task: int = 0, download: bool = False) -> LoaderContext:
    return LoaderContext(task_index=task, data_root=root, allow_download=download)


def test_mnist_in_torchvision_layout_with_classes_and_seeded_shots(tmp_path: Path) -> None:
    write_mnist_like(tmp_path / "MNIST" / "raw", per_class=6, test_per_class=3)
    data = vision.load_mnist({"classes": [3, 1], "k_shot": 2}, ctx(tmp_path, task=4))
    assert data.class_names == ("3", "1")  # clip_benchmark's curated MNIST names
    assert data.templates and "{c}" in data.templates[0]
    assert len(data.train) == 4 and len(data.test) == 6
    example = data.train[0]
    assert isinstance(example["image"], Image.Image) and example["image"].mode == "RGB" and example["task_id"] == 4
    assert sorted(data.train.targets.tolist()) == [0, 0, 1, 1] and sorted(data.test.targets.tolist()) == [0, 0, 0, 1, 1, 1]
    again = vision.load_mnist({"classes": [3, 1], "k_shot": 2}, ctx(tmp_path, task=4))
    assert data.train.indices.tolist() == again.train.indices.tolist()  # same split seed -> same shots
    other = [vision.load_mnist({"classes": [3, 1], "k_shot": 2, "shot_seed": s}, ctx(tmp_path)).train.indices.tolist() for s in range(1, 6)]
    assert any(o != data.train.indices.tolist() for o in other)


def test_eurosat_gets_a_seeded_disjoint_split_and_curated_names(tmp_path: Path) -> None:
    write_eurosat(tmp_path, per_class=5)
    data = vision.load_eurosat({}, ctx(tmp_path))
    assert data.class_names[0] == "annual crop land" and len(data.class_names) == 10
    assert len(data.train) == 40 and len(data.test) == 10
    assert not set(data.train.indices.tolist()) & set(data.test.indices.tolist())
    assert data.train.indices.tolist() == vision.load_eurosat({}, ctx(tmp_path)).train.indices.tolist()


def test_cifar100_pickles_select_dataset_class_indices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets.cifar as tv_cifar

    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *args, **kwargs: True)  # fixture files have other md5s
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    names = [f"class_{i}" for i in range(98)] + ["aquarium_fish", "maple_tree"]
    for split, per_class in (("train", 3), ("test", 1)):
        labels = np.repeat(np.arange(100), per_class)
        data = np.stack([np.full(3072, label, dtype=np.uint8) for label in labels])
        (folder / split).write_bytes(pickle.dumps({"data": data, "fine_labels": labels.tolist()}))
    (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": names}))
    vision._open.cache_clear()
    task = vision.load_cifar100({"classes": [98, 99, 5]}, ctx(tmp_path, task=1))
    assert task.class_names == ("aquarium fish", "maple tree", "class 5")
    assert len(task.train) == 9 and len(task.test) == 3
    first = task.test[0]
    assert first["y"] == 0 and np.asarray(first["image"])[0, 0, 0] == 98  # pixel value encodes the dataset label


def test_imagenet_r_folder_layout_unsplit_and_presplit(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "imagenet-r", WNIDS, per_class=5)
    data = vision_folders.load_imagenet_r({"classes": [2, 0], "k_shot": 3}, ctx(tmp_path, task=1))
    assert data.class_names == ("hammerhead shark", "goldfish")  # CLIP's curated ImageNet names via the wnid
    assert len(data.train) == 6 and len(data.test) == 2  # 80/20 per class, then 3 shots
    assert data.train[0]["image"].mode == "RGB"
    presplit = tmp_path / "split"
    write_image_folder(presplit / "imagenet-r" / "train", WNIDS, per_class=2)
    write_image_folder(presplit / "imagenet-r" / "test", WNIDS, per_class=1)
    data = vision_folders.load_imagenet_r({}, ctx(presplit))
    assert len(data.train) == 6 and len(data.test) == 3 and len(data.class_names) == 3


def test_domainnet_lists_domains_and_classes(tmp_path: Path) -> None:
    write_domainnet(tmp_path, ["clipart", "sketch"], ["aircraft_carrier", "zebra", "apple"], train=2, test=1)
    both = vision_folders.load_domainnet({"classes": [1, 0], "domain": ["clipart", "sketch"]}, ctx(tmp_path))
    assert both.class_names == ("zebra", "aircraft carrier")
    assert len(both.train) == 8 and len(both.test) == 4
    one = vision_folders.load_domainnet({"domain": "sketch", "k_shot": 1}, ctx(tmp_path))
    assert len(one.train) == 3 and len(one.test) == 3
    with pytest.raises(UsageError, match="unknown domain"):
        vision_folders.load_domainnet({"domain": "photos"}, ctx(tmp_path))
    with pytest.raises(MissingAssetError, match="infograph_train.txt"):
        vision_folders.load_domainnet({"domain": "infograph"}, ctx(tmp_path))


def test_fashion_mnist_torchvision_layout_gives_flat_tensors_or_images(tmp_path: Path) -> None:
    write_mnist_like(tmp_path / "FashionMNIST" / "raw", per_class=4, test_per_class=2)
    data = vision_folders.load_fashion_mnist({"classes": [9, 0]}, ctx(tmp_path, task=2))
    assert isinstance(data.train, TensorTaskDataset) and data.input_shape == (784,)
    assert data.class_names == ("Ankle boot", "T-shirt top")
    assert data.train.x.shape == (8, 784) and float(data.train.x.max()) <= 1.0 and data.train.y.tolist() == [0] * 4 + [1] * 4
    images = vision_folders.load_fashion_mnist({"classes": [1], "as_images": True}, ctx(tmp_path))
    assert images.train[0]["image"].size == (28, 28) and images.train[0]["image"].mode == "RGB"


@pytest.mark.skipif(not vision_folders.DEBIAN_FASHION_MNIST.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
def test_fashion_mnist_reads_the_debian_package_files() -> None:
    data = vision_folders.load_fashion_mnist({"classes": [0, 1]}, ctx(None))
    assert len(data.train) == 12_000 and len(data.test) == 2_000


def test_missing_data_is_one_line_naming_dataset_place_and_remedy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(MissingAssetError, match="--data-root"):
        vision.load_dtd({}, ctx(None))
    with pytest.raises(MissingAssetError) as info:
        vision.load_food101({}, ctx(tmp_path))
    message = str(info.value)
    assert "Food-101" in message and str(tmp_path / "food-101") in message and "--allow-download" in message and "\n" not in message
    with pytest.raises(MissingAssetError, match="Kaggle"):
        vision.load_stanford_cars({}, ctx(tmp_path, download=True))
    with pytest.raises(MissingAssetError, match="imagenet-r"):
        vision_folders.load_imagenet_r({}, ctx(tmp_path))
    monkeypatch.setattr(vision_folders, "DEBIAN_FASHION_MNIST", tmp_path / "nowhere")
    with pytest.raises(MissingAssetError, match="apt-get install dataset-fashion-mnist"):
        vision_folders.load_fashion_mnist({}, ctx(tmp_path))


def test_bad_options_are_usage_errors(tmp_path: Path) -> None:
    write_mnist_like(tmp_path / "MNIST" / "raw", per_class=2, test_per_class=1)
    with pytest.raises(UsageError, match="classes"):
        vision.load_mnist({"classes": [10]}, ctx(tmp_path))
    with pytest.raises(UsageError, match="k_shot"):
        vision.load_mnist({"k_shot": "five"}, ctx(tmp_path))


def test_k_shot_draws_with_replacement_only_when_a_class_is_short() -> None:
    targets = np.array([0, 0, 0, 0, 1])
    idx, labels = select_examples(targets, [0, 1], 3, np.random.default_rng(0))
    assert len(set(idx[labels == 0].tolist())) == 3 and idx[labels == 1].tolist() == [4, 4, 4]


def test_stream_builder_relabels_lazy_image_datasets_without_reading_images() -> None:
    def never(index: int) -> Image.Image:
        raise AssertionError("an image was read while relabelling")

    def loader(options: dict[str, Any], context: LoaderContext) -> Any:
        from clbench.data import TaskData

        ds = ImageTaskDataset(never, np.arange(4), np.array([0, 1, 1, 0]), context.task_index)
        return TaskData(train=ds, test=ds, class_names=(f"{options['p']}a", f"{options['p']}b"))

    spec = BenchmarkSpec(name="lazy", version=1, description="", protocol="task-agnostic", backbone="clip:x",
                         tasks=(TaskSpec(name="t1", loader="fake", options={"p": "x"}), TaskSpec(name="t2", loader="fake", options={"p": "y"})))
    stream = build_stream(spec, extra_loaders={"fake": loader})
    second = stream.experiences[1]
    assert second.class_ids == (2, 3) and second.train.targets.tolist() == [2, 3, 3, 2]
    assert isinstance(second.train, ImageTaskDataset) and torch.equal(torch.as_tensor(stream.experiences[0].test.targets), torch.tensor([0, 1, 1, 0]))
