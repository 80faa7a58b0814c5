"""The real ``xtail`` benchmark file built on fixtures in all ten torchvision formats (one image
per class and split, with each dataset's true number of classes): every loader reads its real
layout, the union label space has 1,101 classes offset by domain, curated names are used where
clip_benchmark has them, and a tiny CLIP binds a 1,101-row union head."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from clbench import registry
from clbench.data import build_stream
from clbench.data.vision_base import KNOWN_CLASS_COUNTS
from test_vision_fixtures import save_image, write_eurosat, write_mnist_like, write_tiny_clip_config


def _aircraft(root: Path, n: int) -> None:
    base = root / "fgvc-aircraft-2013b" / "data"
    names = [f"Variant-{i:03d}" for i in range(n)]
    base.mkdir(parents=True)
    (base / "variants.txt").write_text("\n".join(names) + "\n")
    for split, offset in (("trainval", 0), ("test", 1)):
        lines = []
        for label, name in enumerate(names):
            image_id = f"{label:05d}{offset}"
            save_image(base / "images" / f"{image_id}.jpg", label, offset)
            lines.append(f"{image_id} {name}")
        (base / f"images_variant_{split}.txt").write_text("\n".join(lines) + "\n")


def _caltech101(root: Path, n: int) -> None:
    base = root / "caltech101" / "101_ObjectCategories"
    for label, name in enumerate(["BACKGROUND_Google"] + [f"category_{i:03d}" for i in range(n)]):
        for i in range(3):  # three images per class so the 80/20 split leaves test images
            save_image(base / name / f"image_{i:04d}.jpg", label, i)


def _dtd(root: Path, n: int) -> None:
    base = root / "dtd" / "dtd"
    (base / "labels").mkdir(parents=True)
    for split, offset in (("train", 0), ("test", 1)):
        lines = []
        for label in range(n):
            name = f"texture_{label:02d}"
            save_image(base / "images" / name / f"{name}_{offset}.jpg", label, offset)
            lines.append(f"{name}/{name}_{offset}.jpg")
        (base / "labels" / f"{split}1.txt").write_text("\n".join(lines) + "\n")


def _flowers(root: Path, n: int) -> None:
    from scipy.io import savemat

    base = root / "flowers-102"
    labels = np.repeat(np.arange(1, n + 1), 2)  # image ids 1..2n, two per class
    for image_id, label in enumerate(labels, start=1):
        save_image(base / "jpg" / f"image_{image_id:05d}.jpg", int(label), image_id)
    savemat(base / "imagelabels.mat", {"labels": labels})
    ids = np.arange(1, len(labels) + 1)
    savemat(base / "setid.mat", {"trnid": ids[0::2], "valid": ids[0::2], "tstid": ids[1::2]})


def _food(root: Path, n: int) -> None:
    base = root / "food-101"
    (base / "meta").mkdir(parents=True)
    for split, offset in (("train", 0), ("test", 1)):
        meta = {}
        for label in range(n):
            name = f"dish_{label:03d}"
            save_image(base / "images" / name / f"{offset}.jpg", label, offset)
            meta[name] = [f"{name}/{offset}"]
        (base / "meta" / f"{split}.json").write_text(json.dumps(meta))


def _pets(root: Path, n: int) -> None:
    base = root / "oxford-iiit-pet"
    (base / "annotations").mkdir(parents=True)
    for split, offset in (("trainval", 0), ("test", 1)):
        lines = []
        for label in range(n):
            image_id = f"breed_{label:02d}_{offset}"
            save_image(base / "images" / f"{image_id}.jpg", label, offset)
            lines.append(f"{image_id} {label + 1} 1 1")
        (base / "annotations" / f"{split}.txt").write_text("\n".join(lines) + "\n")


def _cars(root: Path, n: int) -> None:
    from scipy.io import savemat

    base = root / "stanford_cars"
    (base / "devkit").mkdir(parents=True)
    savemat(base / "devkit" / "cars_meta.mat", {"class_names": np.array([f"Car Model {i} 2012" for i in range(n)], dtype=object)})
    for split, folder, annotations in (("train", "cars_train", base / "devkit" / "cars_train_annos.mat"),
                                       ("test", "cars_test", base / "cars_test_annos_withlabels.mat")):
        records = np.zeros(n, dtype=[("fname", object), ("class", object)])
        for label in range(n):
            fname = f"{split}_{label:05d}.jpg"
            save_image(base / folder / fname, label, 0 if split == "train" else 1)
            records[label] = (fname, label + 1)
        savemat(annotations, {"annotations": records})


def _sun397(root: Path, n: int) -> None:
    base = root / "SUN397"
    names = [f"/s/scene_{i:03d}" for i in range(n)]
    base.mkdir(parents=True)
    (base / "ClassName.txt").write_text("\n".join(names) + "\n")
    for label, name in enumerate(names):
        for i in range(3):
            save_image(base / name.strip("/") / f"sun_{i}.jpg", label, i)


WRITERS: dict[str, Callable[[Path, int], None]] = {"aircraft": _aircraft, "caltech101": _caltech101, "dtd": _dtd, "flowers102": _flowers,
                                                   "food101": _food, "oxford-pets": _pets, "stanford-cars": _cars, "sun397": _sun397}


@pytest.fixture(scope="module")
def xtail_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("xtail-data")
    for key, writer in WRITERS.items():
        writer(root, KNOWN_CLASS_COUNTS[key])
    write_eurosat(root, per_class=3)
    write_mnist_like(root / "MNIST" / "raw", per_class=2, test_per_class=1)
    return root


def test_xtail_on_every_torchvision_format(xtail_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets.flowers102 as tv_flowers

    monkeypatch.setattr(tv_flowers, "check_integrity", lambda *args, **kwargs: True)  # fixture .mat files have other md5s
    spec, loaders = registry.load_benchmark("xtail")
    stream = build_stream(spec, extra_loaders=loaders, data_root=xtail_root, allow_download=False)
    sizes = [len(e.class_ids) for e in stream.experiences]
    assert sizes == [100, 101, 47, 10, 102, 101, 10, 37, 196, 397] and stream.num_classes == 1101
    offset = 0
    for exp, size in zip(stream.experiences, sizes, strict=True):
        assert exp.class_ids == tuple(range(offset, offset + size))  # label ids offset by domain
        assert len(exp.train) == 16 * size  # 16 shots per class (with replacement from the fixture's few images)
        assert set(exp.test.targets.tolist()) == set(exp.class_ids)
        offset += size
    names = stream.class_names
    caltech, pets = stream.experiences[1].class_ids[0], stream.experiences[7].class_ids[0]
    assert names[caltech] == "off-center face" and names[pets] == "Abyssinian"  # clip_benchmark's curated lists
    assert names[0] == "Variant-000" and names[-1] == "scene 396"  # stored names, cleaned
    example = stream.experiences[8].test[0]
    assert example["image"].mode == "RGB" and example["y"] in stream.experiences[8].class_ids


@pytest.mark.slow  # tokenises and encodes ~6,600 prompts: a minute on a busy 2-core CPU
def test_tiny_clip_binds_the_1101_class_union_head(xtail_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets.flowers102 as tv_flowers

    from clbench.backbones.clip import build_clip

    monkeypatch.setattr(tv_flowers, "check_integrity", lambda *args, **kwargs: True)
    spec, loaders = registry.load_benchmark("xtail")
    stream = build_stream(spec, extra_loaders=loaders, data_root=xtail_root, allow_download=False)
    backbone = build_clip(f"clip:{write_tiny_clip_config(tmp_path)}")
    backbone.bind(stream)
    backbone.eval_start()
    assert backbone._eval_head is not None and backbone._eval_head.shape == (1101, 32)
    exp = stream.experiences[3]
    batch = backbone.collate([exp.test[i] for i in range(len(exp.test))])
    with torch.no_grad():
        scores = backbone.score(batch, exp)
    assert scores.shape == (10,) and set(scores.tolist()) <= {0.0, 1.0}
    assert backbone.head_classes(exp).tolist() == list(range(1101))
