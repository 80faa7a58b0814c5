"""Class counts of the image datasets clbench loads, known without opening the data (no torch).

Kept apart from the loaders (:mod:`clbench.data.vision_base`, which imports torch) so that
``clbench show BENCHMARK`` can print each task's class count and still start in a fraction of a
second.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Classes of each image dataset as its loader reads it (torchvision's class lists; ImageNet-R's
# 200 WordNet folders; DomainNet's 345 labels), for listings that must not open the data.
KNOWN_CLASS_COUNTS = {
    "aircraft": 100, "caltech101": 101, "cifar100": 100, "dtd": 47, "eurosat": 10, "flowers102": 102, "food101": 101, "mnist": 10,
    "oxford-pets": 37, "stanford-cars": 196, "sun397": 397, "imagenet-r": 200, "domainnet": 345, "fashion-mnist": 10,
}


def task_class_count(loader: str, options: Mapping[str, Any]) -> int | None:
    """Classes a task of ``loader`` with ``options`` has, without reading data (None if unknown)."""
    if options.get("classes") is not None:
        return len(options["classes"])
    return KNOWN_CLASS_COUNTS.get(loader)
