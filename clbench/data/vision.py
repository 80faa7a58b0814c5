"""torchvision image datasets: the 11 MTIL/X-TAIL domains and CIFAR-100, with a data root.

Each loader reads its dataset in torchvision's own folder layout under the data root
(``--data-root`` or ``$CLBENCH_DATA_ROOT``; see ``docs/backbones-clip.md``) and downloads only
when the run allows it (``--allow-download`` / ``$CLBENCH_ALLOW_DOWNLOAD=1``). A missing dataset
fails with one line naming it, where it was looked for and how to get it.

Options shared by every loader:
    classes: dataset class indices of this task, in order (default: every class).
    k_shot: training examples per class, sampled with the benchmark's split seed (default: all).
    shot_seed: seed of the k-shot draw (default: the benchmark's split seed).

Datasets without an official train/test split (Caltech101, EuroSAT, SUN397) are split 80/20
within each class, with a generator seeded by the split seed and the dataset name, so the split never depends on
the task order or the run seed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from clbench.data import LoaderContext, TaskData
from clbench.data.classnames import prompt_templates, readable_classnames
from clbench.data.vision_base import ImageTaskDataset, dataset_rng, parse_classes, parse_k_shot, require_root, select_examples, stratified_split
from clbench.errors import DataError, MissingAssetError

TRAIN_FRACTION = 0.8


@dataclass(frozen=True)
class TorchvisionDataset:
    """How one torchvision dataset is opened.

    Attributes:
        key: the loader name (and clbench dataset key).
        title: human-readable name for messages.
        folder: where torchvision looks under the data root.
        open: ``(root, split, download) -> dataset``; ``split`` is ``train`` or ``test``, or
            ``all`` for datasets split here.
        presplit: whether the dataset has an official train/test split.
        manual: how to get it when torchvision cannot download it ('' = downloadable).
    """

    key: str
    title: str
    folder: str
    open: Callable[[Path, str, bool], Any]
    presplit: bool = True
    manual: str = ""


def _tv() -> Any:
    import torchvision.datasets as tv

    return tv


DATASETS: dict[str, TorchvisionDataset] = {d.key: d for d in (
    TorchvisionDataset("aircraft", "FGVC-Aircraft (variants)", "fgvc-aircraft-2013b",
                       lambda r, s, d: _tv().FGVCAircraft(r, split="trainval" if s == "train" else "test", annotation_level="variant", download=d)),
    TorchvisionDataset("caltech101", "Caltech101", "caltech101", lambda r, s, d: _tv().Caltech101(r, target_type="category", download=d),
                       presplit=False),
    TorchvisionDataset("cifar100", "CIFAR-100", "cifar-100-python", lambda r, s, d: _tv().CIFAR100(r, train=s == "train", download=d)),
    TorchvisionDataset("dtd", "DTD (Describable Textures)", "dtd", lambda r, s, d: _tv().DTD(r, split=s, partition=1, download=d)),
    TorchvisionDataset("eurosat", "EuroSAT (RGB)", "eurosat", lambda r, s, d: _tv().EuroSAT(r, download=d), presplit=False),
    TorchvisionDataset("flowers102", "Oxford Flowers-102", "flowers-102", lambda r, s, d: _tv().Flowers102(r, split=s, download=d)),
    TorchvisionDataset("food101", "Food-101", "food-101", lambda r, s, d: _tv().Food101(r, split=s, download=d)),
    TorchvisionDataset("mnist", "MNIST", "MNIST", lambda r, s, d: _tv().MNIST(r, train=s == "train", download=d)),
    TorchvisionDataset("oxford-pets", "Oxford-IIIT Pet", "oxford-iiit-pet",
                       lambda r, s, d: _tv().OxfordIIITPet(r, split="trainval" if s == "train" else "test", target_types="category", download=d)),
    TorchvisionDataset("stanford-cars", "Stanford Cars", "stanford_cars", lambda r, s, d: _tv().StanfordCars(r, split=s, download=False),
                       manual="torchvision cannot download it: place the Kaggle copy (cars_train/, cars_test/, devkit/, cars_test_annos_withlabels.mat) in that folder"),
    TorchvisionDataset("sun397", "SUN397", "SUN397", lambda r, s, d: _tv().SUN397(r, download=d), presplit=False),
)}


def _targets(dataset: Any) -> np.ndarray:
    """Every example's label without reading images (each torchvision class stores them differently)."""
    for attribute in ("targets", "_labels", "y"):
        if hasattr(dataset, attribute):
            return np.asarray(getattr(dataset, attribute), dtype=np.int64)
    if hasattr(dataset, "_samples"):  # StanfordCars: (path, label) pairs
        return np.asarray([label for _, label in dataset._samples], dtype=np.int64)
    raise TypeError(f"cannot read labels of {type(dataset).__name__}")


def _stored_classnames(dataset: Any) -> list[str]:
    names = getattr(dataset, "classes", None) or getattr(dataset, "categories", None)
    if not names:
        raise TypeError(f"{type(dataset).__name__} has no class list")
    return list(names)


@lru_cache(maxsize=16)
def _open(key: str, root: str, split: str, download: bool) -> Any:
    """Open (and cache: CIFAR-100 splits reuse one dataset for ten tasks) a torchvision dataset."""
    spec = DATASETS[key]
    try:
        return spec.open(Path(root), split, download and not spec.manual)
    except (RuntimeError, FileNotFoundError, OSError, KeyError, IndexError) as exc:
        where = Path(root) / spec.folder
        if spec.manual:
            how = spec.manual
        elif download:
            how = f"the download failed ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); check the network or fetch it by hand"
        else:
            how = "rerun with --allow-download (or CLBENCH_ALLOW_DOWNLOAD=1) to let torchvision download it"
        raise MissingAssetError(f"dataset {spec.title} ({split} split) not found under {where}; {how}") from None


def _image_fetcher(dataset: Any) -> Callable[[int], Any]:
    def fetch(index: int) -> Any:
        try:
            return dataset[index][0]  # torchvision returns (PIL image, target) without a transform
        except (OSError, ValueError, SyntaxError) as exc:  # a truncated or foreign image file
            where = getattr(dataset, "root", "")
            raise DataError(f"{type(dataset).__name__} example {index} under {where} cannot be read ({type(exc).__name__}: "
                            f"{str(exc)[:120]}); re-download the dataset or replace the file") from None

    return fetch


def load_torchvision_task(key: str, options: Mapping[str, Any], ctx: LoaderContext) -> TaskData:
    """One task from torchvision dataset ``key`` (see the module docstring for options)."""
    spec = DATASETS[key]
    root = require_root(ctx.data_root, spec.title, f"it is read from <root>/{spec.folder}")
    k_shot = parse_k_shot(options, key)
    seed = int(options.get("shot_seed", ctx.split_seed))
    if spec.presplit:
        train_source = _open(key, str(root), "train", ctx.allow_download)
        test_source = _open(key, str(root), "test", ctx.allow_download)
        train_pool = np.arange(len(train_source))
        test_pool = np.arange(len(test_source))
    else:
        train_source = test_source = _open(key, str(root), "all", ctx.allow_download)
        train_pool, test_pool = stratified_split(_targets(train_source), TRAIN_FRACTION, dataset_rng(ctx.split_seed, key, "split"))
    stored = _stored_classnames(train_source)
    classes = parse_classes(options, len(stored), key)
    train_targets = _targets(train_source)
    test_targets = _targets(test_source)
    shots = dataset_rng(seed, key, "shots") if k_shot is not None else None
    train_idx, train_y = select_examples(train_targets[train_pool], classes, k_shot, shots)
    test_idx, test_y = select_examples(test_targets[test_pool], classes, None, None)
    names = readable_classnames(key, stored)
    return TaskData(
        train=ImageTaskDataset(_image_fetcher(train_source), train_pool[train_idx], train_y, ctx.task_index),
        test=ImageTaskDataset(_image_fetcher(test_source), test_pool[test_idx], test_y, ctx.task_index),
        class_names=tuple(names[c] for c in classes),
        templates=prompt_templates(key),
    )


def _loader(key: str) -> Callable[[Mapping[str, Any], LoaderContext], TaskData]:
    def load(options: Mapping[str, Any], ctx: LoaderContext) -> TaskData:
        return load_torchvision_task(key, options, ctx)

    load.__name__ = f"load_{key.replace('-', '_')}"
    load.__doc__ = f"One task of {DATASETS[key].title} (torchvision layout under <data root>/{DATASETS[key].folder})."
    return load


load_aircraft = _loader("aircraft")
load_caltech101 = _loader("caltech101")
load_cifar100 = _loader("cifar100")
load_dtd = _loader("dtd")
load_eurosat = _loader("eurosat")
load_flowers102 = _loader("flowers102")
load_food101 = _loader("food101")
load_mnist = _loader("mnist")
load_oxford_pets = _loader("oxford-pets")
load_stanford_cars = _loader("stanford-cars")
load_sun397 = _loader("sun397")
