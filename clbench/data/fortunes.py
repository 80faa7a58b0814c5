"""``fortunes``: text classification by fortune-cookie category (Debian package ``fortunes``).

The Debian package installs one plain-text file per category under
``/usr/share/games/fortunes``, quotes separated by lines holding a single ``%``. A task takes
the categories named in ``options.categories`` (each becomes a class, named after its file),
samples ``per_class`` quotes per category with a generator seeded by the benchmark's split seed
and the category name, and holds out ``test_fraction`` of them for testing. The labels are
topical and noisy and the content is unfiltered humour: a smoke benchmark for text CL that
needs nothing but ``apt-get install fortunes``, not a headline benchmark.

Options:
    categories: category file names, e.g. ``["people", "computers"]``.
    per_class: quotes sampled per category (default 300; fewer if the file has fewer).
    test_fraction: share of each category's sample held out for testing (default 0.2).
    max_chars: drop quotes longer than this many characters (default 400), so a few long
        poems do not dominate the token budget.
    root: folder holding the category files (default: ``<data root>/fortunes`` if it exists,
        else ``/usr/share/games/fortunes``).

Examples are ``{"text", "y", "task_id"}`` dicts.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from clbench.api.stream import ExampleListDataset
from clbench.data import LoaderContext, TaskData
from clbench.errors import MissingAssetError, UsageError

DEBIAN_DIR = Path("/usr/share/games/fortunes")
INSTALL_HINT = "install it with: apt-get install fortunes (Debian/Ubuntu), or copy the category files into <data root>/fortunes"
_OVERSTRIKE = re.compile(r".\x08")  # "_\bx" underlining and "x\bx" bold in old fortune files


def fortunes_dir(options: Mapping[str, Any], ctx: LoaderContext) -> Path:
    """Where the category files are read from (see the module docstring)."""
    if options.get("root"):
        return Path(str(options["root"])).expanduser()
    if ctx.data_root is not None and (ctx.data_root / "fortunes").is_dir():
        return ctx.data_root / "fortunes"
    return DEBIAN_DIR


def read_fortunes(path: Path) -> list[str]:
    """The quotes of one category file, whitespace-normalised, overstrikes removed."""
    text = path.read_text(encoding="utf-8", errors="replace")
    quotes = []
    for block in re.split(r"^%\s*$", text, flags=re.M):
        quote = " ".join(_OVERSTRIKE.sub("", block).split())
        if quote:
            quotes.append(quote)
    return quotes


def load_fortunes_task(options: Mapping[str, Any], ctx: LoaderContext) -> TaskData:
    """One task of fortune categories (one class per category)."""
    categories = [str(c) for c in options.get("categories", ())]
    if not categories:
        raise UsageError("fortunes loader needs options.categories, e.g. categories = [\"people\", \"computers\"]")
    per_class = int(options.get("per_class", 300))
    test_fraction = float(options.get("test_fraction", 0.2))
    max_chars = int(options.get("max_chars", 400))
    if per_class < 2 or not 0 < test_fraction < 1:
        raise UsageError(f"fortunes loader: per_class must be >= 2 and test_fraction in (0, 1); got {per_class}, {test_fraction}")
    folder = fortunes_dir(options, ctx)
    train: list[dict[str, Any]] = []
    test: list[dict[str, Any]] = []
    for label, category in enumerate(categories):
        path = folder / category
        if not path.is_file():
            raise MissingAssetError(f"dataset fortunes: category file {category!r} not found in {folder}; {INSTALL_HINT}")
        quotes = [q for q in read_fortunes(path) if len(q) <= max_chars]
        random.Random(f"fortunes/{ctx.split_seed}/{category}").shuffle(quotes)
        sample = quotes[:per_class]
        n_test = max(1, round(len(sample) * test_fraction))
        for i, quote in enumerate(sample):
            (test if i < n_test else train).append({"text": quote, "y": label, "task_id": ctx.task_index})
    return TaskData(train=ExampleListDataset(train), test=ExampleListDataset(test), class_names=tuple(categories))
