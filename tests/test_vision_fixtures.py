"""Small on-disk datasets in each loader's real folder format, and a tiny open_clip config.

Other test modules import the writers from here; the tests at the bottom check the writers
themselves against the readers they feed (so a broken fixture fails here, not downstream).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

TINY_CLIP = {"embed_dim": 32,
             "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
             "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}


def write_tiny_clip_config(folder: Path, name: str = "tiny-clip-test") -> Path:
    """A 2-layer, width-32 CLIP config (32 px images, patch 8, text context 16) as a JSON file."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(TINY_CLIP), encoding="utf-8")
    return path


def save_tiny_clip(folder: Path, name: str = "tiny-clip-test", seed: int = 0) -> tuple[Path, Path]:
    """A tiny CLIP registered with open_clip and its random weights saved as ``tiny.pt``.

    Returns ``(config, checkpoint)``: the backbone spec ``clip:{config}@{checkpoint}`` loads it
    through open_clip's real ``pretrained=<file>`` path.
    """
    import open_clip
    import torch

    config = write_tiny_clip_config(folder, name)
    open_clip.add_model_config(config)
    torch.manual_seed(seed)
    checkpoint = folder / "tiny.pt"
    torch.save(open_clip.create_model(name).state_dict(), checkpoint)
    return config, checkpoint


def _pattern(label: int, variant: int, size: int = 12) -> np.ndarray:
    """A class-dependent RGB pattern (colour by label) with per-image noise."""
    rng = np.random.default_rng(label * 1000 + variant)
    base = np.array([(label * 67) % 256, (label * 131) % 256, (label * 29) % 256], dtype=np.float64)
    image = base + rng.normal(0, 20, size=(size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def save_image(path: Path, label: int, variant: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_pattern(label, variant)).save(path)


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write an idx (MNIST format) file of uint8 data."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist_like(folder: Path, per_class: int, test_per_class: int, prefix: str = "") -> None:
    """MNIST-format idx files (28x28 digits-like blobs, 10 classes) in ``folder``."""
    for split, count, stem in (("train", per_class, "train"), ("test", test_per_class, "t10k")):
        labels = np.repeat(np.arange(10), count)
        images = np.stack([_pattern(int(l), i + (0 if split == "train" else 10_000), size=28)[..., 0] for i, l in enumerate(labels)])
        write_idx(folder / f"{prefix}{stem}-images-idx3-ubyte", images)
        write_idx(folder / f"{prefix}{stem}-labels-idx1-ubyte", labels)


def write_eurosat(root: Path, per_class: int) -> list[str]:
    """torchvision EuroSAT layout: ``<root>/eurosat/2750/<Class>/<file>.jpg``."""
    classes = ["AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial", "Pasture", "PermanentCrop", "Residential", "River", "SeaLake"]
    for label, name in enumerate(classes):
        for i in range(per_class):
            save_image(root / "eurosat" / "2750" / name / f"{name}_{i}.jpg", label, i)
    return classes


def write_image_folder(folder: Path, classes: Sequence[str], per_class: int, offset: int = 0) -> None:
    """ImageFolder layout: ``<folder>/<class>/<n>.png``."""
    for label, name in enumerate(classes):
        for i in range(per_class):
            save_image(folder / name / f"{i}.png", label + offset, i)


def write_domainnet(root: Path, domains: Sequence[str], classes: Sequence[str], train: int, test: int) -> None:
    """DomainNet layout: ``<root>/domainnet/<domain>/<class>/<file>.jpg`` plus the split lists."""
    base = root / "domainnet"
    for domain in domains:
        for split, count in (("train", train), ("test", test)):
            lines = []
            for label, name in enumerate(classes):
                for i in range(count):
                    rel = f"{domain}/{name}/{domain}_{label:03d}_{split}{i}.jpg"
                    save_image(base / rel, label, i + (100 if split == "test" else 0))
                    lines.append(f"{rel} {label}")
            (base / f"{domain}_{split}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


# ---- checks of the writers themselves --------------------------------------------------
TWO_DOMAIN_MTIL = """version = 1
description = "Two MTIL-style domains on fixture data."
protocol = "task-incremental"
backbone = "{backbone}"
metrics = ["mtil_transfer", "mtil_avg", "mtil_last"]
[train]
iterations = 2
batch_size = 8
eval_batch_size = 64
lr = 0.01
[defaults]
k_shot = 3
[[tasks]]
name = "mnist"
loader = "mnist"
options = {{ classes = [0, 1, 2, 3] }}
[[tasks]]
name = "eurosat"
loader = "eurosat"
"""


def write_two_domain_mtil(base: Path, clip_name: str = "tiny-clip-test") -> dict[str, Path]:
    """A tiny CLIP checkpoint, MNIST and EuroSAT fixture data and ``mtil-tiny.toml`` over them.

    Returns ``{"base", "data", "bench", "config"}``; run the benchmark with ``--data-root data``.
    """
    config, checkpoint = save_tiny_clip(base, clip_name)
    data = base / "data"
    write_mnist_like(data / "MNIST" / "raw", per_class=4, test_per_class=3)
    write_eurosat(data, per_class=4)
    bench = base / "mtil-tiny.toml"
    bench.write_text(TWO_DOMAIN_MTIL.format(backbone=f"clip:{config}@{checkpoint}"), encoding="utf-8")
    return {"base": base, "data": data, "bench": bench, "config": config}


def test_idx_writer_round_trips_through_the_fashion_reader(tmp_path: Path) -> None:
    from clbench.data.vision_folders import _read_idx

    data = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "x-idx3-ubyte", data)
    assert np.array_equal(_read_idx(tmp_path / "x-idx3-ubyte"), data)


def test_patterns_differ_by_class_and_repeat_by_seed() -> None:
    assert not np.array_equal(_pattern(0, 0), _pattern(1, 0))
    assert np.array_equal(_pattern(3, 5), _pattern(3, 5))
