"""Class names and zero-shot prompt templates from maintained packages, never hand-typed.

* **Templates** for the MTIL/X-TAIL datasets and the 80 OpenAI ImageNet templates come from
  ``clip_benchmark``'s packaged ``en_zeroshot_classification_templates.json`` (read as data: the
  package itself is not imported).
* **Curated class names** (CLIP's readable names) come from ``clip_benchmark``'s
  ``en_classnames.json`` where it has them (Caltech101, EuroSAT, Flowers102, MNIST, Oxford
  Pets, ImageNet-1k). Other datasets use the names stored in the dataset's own metadata
  (torchvision's ``classes``), cleaned the way clip_benchmark cleans them (``_`` and ``/``
  become spaces).
* **ImageNet-R** folders are WordNet ids: timm's ImageNet synset list gives each id's index
  among the 1000 classes and open_clip's ``IMAGENET_CLASSNAMES`` (CLIP's curated names) its name.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

from clbench.errors import MissingAssetError

# clbench dataset key -> clip_benchmark dataset key (class names and templates files).
CLIP_BENCHMARK_KEYS = {
    "aircraft": "fgvc_aircraft", "caltech101": "caltech101", "cifar100": "cifar100", "dtd": "dtd", "eurosat": "eurosat",
    "flowers102": "flowers", "food101": "food101", "mnist": "mnist", "oxford-pets": "pets", "stanford-cars": "cars",
    "sun397": "sun397", "imagenet-r": "imagenet1k", "domainnet": "imagenet1k", "fashion-mnist": "imagenet1k",
}


@cache
def _clip_benchmark_json(filename: str) -> dict[str, Any]:
    spec = importlib.util.find_spec("clip_benchmark")
    if spec is None or not spec.submodule_search_locations:
        raise MissingAssetError("class names and prompt templates need the clip-benchmark package; install it with: pip install clip-benchmark")
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / filename
    if not path.is_file():
        raise MissingAssetError(f"clip-benchmark is installed but lacks {path.name}; reinstall it: pip install --force-reinstall clip-benchmark")
    return json.loads(path.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def prompt_templates(dataset: str) -> tuple[str, ...]:
    """Zero-shot templates (``{c}`` = class name) for a clbench dataset key."""
    key = CLIP_BENCHMARK_KEYS.get(dataset, "imagenet1k")
    templates = _clip_benchmark_json("en_zeroshot_classification_templates.json")[key]
    return tuple(str(t) for t in templates)


def curated_classnames(dataset: str) -> tuple[str, ...] | None:
    """CLIP's readable class names for ``dataset`` from clip_benchmark, if it has a list."""
    key = CLIP_BENCHMARK_KEYS.get(dataset)
    names = _clip_benchmark_json("en_classnames.json").get(key) if key else None
    return tuple(names) if names else None


def clean_classname(raw: str) -> str:
    """A dataset's stored class name made readable (``_`` and ``/`` become spaces)."""
    return re.sub(r"\s+", " ", raw.replace("_", " ").replace("/", " ")).strip()


def readable_classnames(dataset: str, stored: Sequence[str]) -> tuple[str, ...]:
    """The class names a CLIP head uses for ``dataset`` whose metadata lists ``stored``.

    Uses clip_benchmark's curated list when it describes the same classes (Caltech101's list
    starts with the background class, which torchvision drops), else the cleaned stored names.
    """
    curated = curated_classnames(dataset)
    if curated is not None and dataset == "caltech101" and len(curated) == len(stored) + 1:
        curated = curated[1:]
    if curated is not None and len(curated) == len(stored):
        return curated
    return tuple(clean_classname(s) for s in stored)


@cache
def imagenet_names_by_wnid() -> dict[str, str]:
    """WordNet id -> CLIP's curated ImageNet class name, for the 1000 ImageNet-1k classes."""
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES
    from timm.data import ImageNetInfo

    wnids = ImageNetInfo().label_names()
    return dict(zip(wnids, IMAGENET_CLASSNAMES, strict=True))
