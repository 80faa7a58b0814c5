"""Image datasets read from their released folder layouts: ImageNet-R, DomainNet, Fashion-MNIST.

* **ImageNet-R** (``imagenet-r``): ``<root>/imagenet-r/<wnid>/*.jpg`` as the released tar
  extracts (200 classes, sorted WordNet ids = class indices 0..199). If ``train/`` and
  ``test/`` sub-folders exist (a pre-made split in the same layout) they are used; otherwise
  each class is split 80/20 with a generator seeded by the benchmark's split seed.
* **DomainNet** (``domainnet``): ``<root>/domainnet/<domain>/<class>/*.jpg`` plus the official
  ``<domain>_train.txt`` / ``<domain>_test.txt`` lists (``path label`` per line). Class indices
  are the lists' labels (345 classes); ``domain`` picks one domain or a list (default: all six,
  as in the InfLoRA/CoSO class-incremental setup).
* **Fashion-MNIST** (``fashion-mnist``): the four idx files (``.gz`` or not) in torchvision's
  layout ``<root>/FashionMNIST/raw/`` or, when no data root has them, the Debian package
  ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``). It returns flattened
  28x28 tensors in [0, 1] for the classic MLP backbone (``TensorTaskDataset``), or PIL images
  with ``as_images = true`` for image backbones.

Options: ``classes`` and ``k_shot`` (``shot_seed``) as for :mod:`clbench.data.vision`.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from clbench.api.stream import TensorTaskDataset
from clbench.data import LoaderContext, TaskData
from clbench.data.classnames import clean_classname, imagenet_names_by_wnid, prompt_templates
from clbench.data.vision_base import ImageTaskDataset, dataset_rng, open_rgb, parse_classes, parse_k_shot, random_split, require_root, select_examples
from clbench.errors import DataError, MissingAssetError, UsageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
DOMAINNET_DOMAINS = ("clipart", "infograph", "painting", "quickdraw", "real", "sketch")
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
TRAIN_FRACTION = 0.8


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def _path_fetcher(paths: Sequence[Path]) -> Any:
    def fetch(index: int) -> Image.Image:
        return open_rgb(paths[index])

    return fetch


def _task_from_pools(paths: list[Path], train_pool: np.ndarray, train_targets: np.ndarray, test_pool: np.ndarray, test_targets: np.ndarray,
                     classes: list[int], names: Sequence[str], key: str, options: Mapping[str, Any], ctx: LoaderContext) -> TaskData:
    k_shot = parse_k_shot(options, key)
    shots = dataset_rng(int(options.get("shot_seed", ctx.split_seed)), key, "shots") if k_shot is not None else None
    train_idx, train_y = select_examples(train_targets, classes, k_shot, shots)
    test_idx, test_y = select_examples(test_targets, classes, None, None)
    fetch = _path_fetcher(paths)
    return TaskData(train=ImageTaskDataset(fetch, train_pool[train_idx], train_y, ctx.task_index),
                    test=ImageTaskDataset(fetch, test_pool[test_idx], test_y, ctx.task_index),
                    class_names=tuple(names[c] for c in classes), templates=prompt_templates(key))


# ---- ImageNet-R ---------------------------------------------------------------------------
@lru_cache(maxsize=4)
def _scan_imagenet_r(folder: str, seed: int) -> tuple[list[Path], np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
    base = Path(folder)
    presplit = (base / "train").is_dir() and (base / "test").is_dir()
    wnids = sorted(p.name for p in (base / "train" if presplit else base).iterdir() if p.is_dir())
    paths: list[Path] = []
    labels: list[int] = []
    is_train: list[bool] = []
    for label, wnid in enumerate(wnids):
        if presplit:
            for part in ("train", "test"):
                found = _images_in(base / part / wnid) if (base / part / wnid).is_dir() else []
                paths += found
                labels += [label] * len(found)
                is_train += [part == "train"] * len(found)
        else:
            found = _images_in(base / wnid)
            train_local, _ = random_split(len(found), TRAIN_FRACTION, dataset_rng(seed, "imagenet-r", wnid))
            mask = np.zeros(len(found), dtype=bool)
            mask[train_local] = True
            paths += found
            labels += [label] * len(found)
            is_train += mask.tolist()
    y = np.asarray(labels, dtype=np.int64)
    train = np.asarray(is_train, dtype=bool)
    return paths, np.flatnonzero(train), y[train], np.flatnonzero(~train), y[~train], tuple(wnids)


def load_imagenet_r(options: Mapping[str, Any], ctx: LoaderContext) -> TaskData:
    """One task of ImageNet-R (``<root>/imagenet-r/<wnid>/...``; 200 classes in sorted wnid order)."""
    how = "download imagenet-r.tar from https://github.com/hendrycks/imagenet-r and extract it there"
    root = require_root(ctx.data_root, "ImageNet-R", how)
    folder = root / "imagenet-r"
    if not folder.is_dir():
        raise MissingAssetError(f"dataset ImageNet-R not found under {folder}; {how}")
    paths, train_pool, train_y, test_pool, test_y, wnids = _scan_imagenet_r(str(folder), ctx.split_seed)
    if not wnids:
        raise MissingAssetError(f"dataset ImageNet-R: {folder} has no class folders; {how}")
    names_by_wnid = imagenet_names_by_wnid()
    names = [names_by_wnid.get(w, w) for w in wnids]
    classes = parse_classes(options, len(wnids), "imagenet-r")
    return _task_from_pools(paths, train_pool, train_y, test_pool, test_y, classes, names, "imagenet-r", options, ctx)


# ---- DomainNet ----------------------------------------------------------------------------
def _read_list(folder: Path, domain: str, split: str) -> list[tuple[str, int]]:
    path = folder / f"{domain}_{split}.txt"
    if not path.is_file():
        raise MissingAssetError(f"dataset DomainNet: split list {path} not found; download the {domain} images and "
                                f"{domain}_train.txt/{domain}_test.txt from https://ai.bu.edu/M3SDA/ into {folder}")
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            rel, label = line.rsplit(maxsplit=1)
            entries.append((rel, int(label)))
    return entries


@lru_cache(maxsize=8)
def _scan_domainnet(folder: str, domains: tuple[str, ...]) -> tuple[list[Path], np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
    base = Path(folder)
    paths: list[Path] = []
    pools: dict[str, tuple[list[int], list[int]]] = {"train": ([], []), "test": ([], [])}
    names: dict[int, str] = {}
    for domain in domains:
        for split in ("train", "test"):
            for rel, label in _read_list(base, domain, split):
                pools[split][0].append(len(paths))
                pools[split][1].append(label)
                paths.append(base / rel)
                names.setdefault(label, Path(rel).parent.name)  # <domain>/<class>/<file>
    count = max(names) + 1 if names else 0
    class_names = tuple(clean_classname(names.get(i, str(i))) for i in range(count))
    train, test = (tuple(np.asarray(v, dtype=np.int64) for v in pools[s]) for s in ("train", "test"))
    return paths, train[0], train[1], test[0], test[1], class_names


def load_domainnet(options: Mapping[str, Any], ctx: LoaderContext) -> TaskData:
    """One task of DomainNet (``domain``: one name or a list; default all six domains)."""
    how = "download the domain zips and <domain>_train.txt/<domain>_test.txt from https://ai.bu.edu/M3SDA/ and extract them there"
    root = require_root(ctx.data_root, "DomainNet", how)
    raw = options.get("domain", list(DOMAINNET_DOMAINS))
    domains = (raw,) if isinstance(raw, str) else tuple(raw)
    unknown = [d for d in domains if d not in DOMAINNET_DOMAINS]
    if unknown or not domains:
        raise UsageError(f"domainnet: unknown domain(s) {unknown or raw!r}; valid: {', '.join(DOMAINNET_DOMAINS)}")
    folder = root / "domainnet"
    if not folder.is_dir():
        raise MissingAssetError(f"dataset DomainNet not found under {folder}; {how}")
    paths, train_pool, train_y, test_pool, test_y, names = _scan_domainnet(str(folder), domains)
    classes = parse_classes(options, len(names), "domainnet")
    return _task_from_pools(paths, train_pool, train_y, test_pool, test_y, classes, names, "domainnet", options, ctx)


# ---- Fashion-MNIST ------------------------------------------------------------------------
def _read_idx(path: Path) -> np.ndarray:
    """Read an idx file (the MNIST format: unsigned bytes), gzipped or not.

    Raises:
        DataError: an empty, truncated or otherwise damaged file (or ``.gz``), naming it.
    """
    how = "re-download it (or reinstall dataset-fashion-mnist)"
    try:
        raw = path.read_bytes()
        data = gzip.decompress(raw) if path.suffix == ".gz" else raw
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise DataError(f"data file {path} is damaged ({type(exc).__name__}: {exc}); {how}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08 or not 1 <= data[3] <= 4:
        raise DataError(f"data file {path} is not an idx file of bytes ({len(data)} bytes, header {data[:4].hex() or 'empty'}); {how}")
    dims = data[3]
    header = 4 + 4 * dims
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    if len(data) < header or len(data) - header != int(np.prod(shape)):
        raise DataError(f"data file {path} is truncated or damaged: its header promises {'x'.join(map(str, shape))} bytes of data, "
                        f"it holds {max(len(data) - header, 0)}; {how}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _find_fashion_folder(root: Path | None) -> Path | None:
    candidates = [root / "FashionMNIST" / "raw", root / "fashion-mnist", root] if root is not None else []
    candidates.append(DEBIAN_FASHION_MNIST)
    for folder in candidates:
        if any((folder / f"train-images-idx3-ubyte{ext}").is_file() for ext in ("", ".gz")):
            return folder
    return None


@lru_cache(maxsize=2)
def _fashion_arrays(folder: str) -> dict[str, np.ndarray]:
    base = Path(folder)

    def read(stem: str) -> np.ndarray:
        plain = base / stem
        return _read_idx(plain if plain.is_file() else base / f"{stem}.gz")

    arrays = {"train_x": read("train-images-idx3-ubyte"), "train_y": read("train-labels-idx1-ubyte").astype(np.int64),
              "test_x": read("t10k-images-idx3-ubyte"), "test_y": read("t10k-labels-idx1-ubyte").astype(np.int64)}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_x"], arrays[f"{split}_y"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels) or (len(labels) and labels.max() > 9):
            raise DataError(f"Fashion-MNIST files in {base} do not match: {split} images {images.shape}, labels {labels.shape} "
                            "(expected N x 28 x 28 images and N labels 0-9); re-download them")
    return arrays


def load_fashion_mnist(options: Mapping[str, Any], ctx: LoaderContext) -> TaskData:
    """One task of Fashion-MNIST (data root in torchvision layout, else the Debian package).

    Extra options: ``as_images`` (PIL images instead of flat tensors), ``train_limit`` (first
    N training examples of each selected class, for quick runs; default all).
    """
    from torchvision.datasets import FashionMNIST

    folder = _find_fashion_folder(Path(ctx.data_root).expanduser() if ctx.data_root else None)
    if folder is None:
        where = f"{ctx.data_root}/FashionMNIST/raw and " if ctx.data_root else ""
        raise MissingAssetError(f"dataset Fashion-MNIST not found in {where}{DEBIAN_FASHION_MNIST}; install it with: sudo apt-get install dataset-fashion-mnist "
                                "(or let torchvision download it under a data root)")
    arrays = _fashion_arrays(str(folder))
    names = [clean_classname(c) for c in FashionMNIST.classes]
    classes = parse_classes(options, len(names), "fashion-mnist")
    k_shot = parse_k_shot(options, "fashion-mnist")
    shots = dataset_rng(int(options.get("shot_seed", ctx.split_seed)), "fashion-mnist", "shots") if k_shot is not None else None
    train_idx, train_y = select_examples(arrays["train_y"], classes, k_shot, shots)
    limit = options.get("train_limit")
    if limit is not None:
        keep = np.concatenate([np.flatnonzero(train_y == c)[: int(limit)] for c in range(len(classes))])
        train_idx, train_y = train_idx[keep], train_y[keep]
    test_idx, test_y = select_examples(arrays["test_y"], classes, None, None)
    if options.get("as_images", False):
        def fetcher(images: np.ndarray) -> Any:
            return lambda i: Image.fromarray(images[i])  # uint8 28x28 -> mode "L"

        train = ImageTaskDataset(fetcher(arrays["train_x"]), train_idx, train_y, ctx.task_index)
        test = ImageTaskDataset(fetcher(arrays["test_x"]), test_idx, test_y, ctx.task_index)
        return TaskData(train=train, test=test, class_names=tuple(names[c] for c in classes), templates=prompt_templates("fashion-mnist"))

    def tensors(images: np.ndarray, idx: np.ndarray, y: np.ndarray) -> TensorTaskDataset:
        x = torch.from_numpy(images[idx].reshape(len(idx), -1).astype(np.float32) / 255.0)
        return TensorTaskDataset(x, torch.from_numpy(y), ctx.task_index)

    return TaskData(train=tensors(arrays["train_x"], train_idx, train_y), test=tensors(arrays["test_x"], test_idx, test_y),
                    class_names=tuple(names[c] for c in classes), input_shape=(784,))
