"""Your own data without a plugin: tasks from an image folder or from JSONL files, declared in TOML.

``image-folder`` reads torchvision's ``ImageFolder`` layout, one sub-folder per class::

    [[tasks]]
    name = "my-birds"
    loader = "image-folder"
    options = { path = "birds/train", test_path = "birds/test", k_shot = 5, class_names = { sparrow = "house sparrow" } }

* ``path``: the folder (relative paths are read under ``--data-root``); its sub-folders, sorted,
  are the classes; files with an image suffix in them are the examples.
* ``test_path``: a folder with the same class sub-folders for the test set; without it,
  ``test_fraction`` (default 0.2) of each class is held out, drawn with ``split_seed`` (default:
  the benchmark's protocol seed, so every run sees the same split).
* ``k_shot`` (training examples per class, drawn with ``shot_seed``), ``classes`` (a subset, by
  folder name or index), ``class_names`` (folder name -> the name CLIP prompts use; default the
  folder name with ``_`` and ``-`` as spaces), ``templates`` (CLIP prompt templates with ``{}``).

``jsonl`` reads one JSON object per line::

    options = { train = "qa/train.jsonl", test = "qa/test.jsonl" }                       # prompt/answer: generation
    options = { train = "reviews.jsonl", test_fraction = 0.2, task = "classification" }  # text/label: classification

* ``task = "generation"`` (default): ``prompt_field``/``answer_field`` (default ``prompt``,
  ``answer``), scored by the task's ``metric`` (exact match by default) on LLM backbones;
  ``max_new_tokens`` (default 32) bounds the generated answer.
* ``task = "classification"``: ``text_field``/``label_field`` (default ``text``, ``label``); the
  classes are the sorted distinct labels (or ``labels``, a list fixing their order), and each
  example also carries ``prompt``/``answer`` so LLM backbones can learn and score it by answer.
* ``test`` or ``test_fraction`` (+ ``split_seed``) as for image folders; ``k_shot`` per class
  for classification, ``n_train`` (first examples after shuffling with ``shot_seed``) for generation.

Every problem is one line naming the file (and line): a missing folder or file, a class folder
without images, a line that is not a JSON object or lacks a field.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from clbench.api.stream import ExampleListDataset
from clbench.data import LoaderContext, TaskData
from clbench.data.vision_base import ImageTaskDataset, dataset_rng, open_rgb, parse_k_shot, select_examples, stratified_split
from clbench.data.vision_folders import IMAGE_SUFFIXES
from clbench.errors import DataError, MissingAssetError, UsageError

DEFAULT_TEST_FRACTION = 0.2
DEFAULT_TEMPLATES = ("a photo of a {}.",)


def resolve_path(raw: Any, ctx: LoaderContext, what: str, option: str) -> Path:
    """``raw`` as a path: absolute, or under the data root (else the working folder)."""
    if not isinstance(raw, str) or not raw.strip():
        raise UsageError(f"{what}: option {option!r} must be a path string, got {raw!r}")
    path = Path(raw).expanduser()
    if not path.is_absolute() and ctx.data_root is not None:
        path = Path(ctx.data_root).expanduser() / path
    return path


def _test_fraction(options: Mapping[str, Any], what: str) -> float:
    fraction = options.get("test_fraction", DEFAULT_TEST_FRACTION)
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 < fraction < 1:
        raise UsageError(f"{what}: test_fraction must be a number between 0 and 1, got {fraction!r}")
    return float(fraction)


# ---- image folders ---------------------------------------------------------------------------
def scan_image_folder(folder: Path, what: str) -> tuple[list[str], list[Path], np.ndarray]:
    """Class folder names (sorted), image paths and their class index.

    Raises:
        MissingAssetError: no such folder.
        DataError: no class sub-folder, or a class folder without images.
    """
    if not folder.is_dir():
        raise MissingAssetError(f"{what}: image folder {folder} does not exist (one sub-folder per class, torchvision ImageFolder layout)")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{what}: image folder {folder} has no class sub-folders (expected {folder}/<class>/<image>)")
    paths: list[Path] = []
    labels: list[int] = []
    for index, name in enumerate(classes):
        images = sorted(p for p in (folder / name).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not images:
            raise DataError(f"{what}: class folder {folder / name} holds no image ({', '.join(IMAGE_SUFFIXES)})")
        paths += images
        labels += [index] * len(images)
    return classes, paths, np.asarray(labels, dtype=np.int64)


def _select_classes(options: Mapping[str, Any], classes: list[str], what: str) -> list[int]:
    raw = options.get("classes")
    if raw is None:
        return list(range(len(classes)))
    if not isinstance(raw, list) or not raw:
        raise UsageError(f"{what}: classes must be a non-empty list of class folder names or indices, got {raw!r}")
    chosen = []
    for item in raw:
        if isinstance(item, str) and item in classes:
            chosen.append(classes.index(item))
        elif isinstance(item, int) and not isinstance(item, bool) and 0 <= item < len(classes):
            chosen.append(item)
        else:
            raise UsageError(f"{what}: class {item!r} is not one of the folders ({', '.join(classes[:8])}{', ...' if len(classes) > 8 else ''})")
    if len(set(chosen)) != len(chosen):
        raise UsageError(f"{what}: classes {raw!r} names a class twice")
    return chosen


def _display_names(options: Mapping[str, Any], classes: list[str], what: str) -> list[str]:
    given = options.get("class_names", {})
    if not isinstance(given, dict) or not all(isinstance(v, str) and v.strip() for v in given.values()):
        raise UsageError(f"{what}: class_names must map class folder names to names, e.g. {{ n01440764 = \"tench\" }}")
    unknown = sorted(set(given) - set(classes))
    if unknown:
        raise UsageError(f"{what}: class_names names folders that do not exist: {', '.join(unknown[:5])}")
    return [given.get(c, c.replace("_", " ").replace("-", " ")) for c in classes]


def load_image_folder(options: Mapping[str, Any], ctx: LoaderContext) -> TaskData:
    """One task from an ``ImageFolder``-layout folder (see the module docstring)."""
    what = f"image-folder task {ctx.task_index + 1}"
    root = resolve_path(options.get("path"), ctx, what, "path")
    classes, paths, targets = scan_image_folder(root, what)
    split_seed = int(options.get("split_seed", ctx.split_seed))
    if options.get("test_path") is not None:
        test_root = resolve_path(options["test_path"], ctx, what, "test_path")
        test_classes, test_paths, test_targets = scan_image_folder(test_root, what)
        if test_classes != classes:
            raise DataError(f"{what}: test folder {test_root} has classes {test_classes[:5]}..., not the training folder's {classes[:5]}...")
        offset = len(paths)
        paths = paths + test_paths
        train_pool, test_pool = np.arange(offset), np.arange(offset, len(paths))
        train_targets, test_targets_all = targets, test_targets
    else:
        train_pool, test_pool = stratified_split(targets, 1 - _test_fraction(options, what), dataset_rng(split_seed, str(root), "split"))
        train_targets, test_targets_all = targets[train_pool], targets[test_pool]
    chosen = _select_classes(options, classes, what)
    names = _display_names(options, classes, what)
    k_shot = parse_k_shot(options, what)
    shots = dataset_rng(int(options.get("shot_seed", split_seed)), str(root), "shots") if k_shot is not None else None
    train_idx, train_y = select_examples(train_targets, chosen, k_shot, shots)
    test_idx, test_y = select_examples(test_targets_all, chosen, None, None)
    templates = options.get("templates", DEFAULT_TEMPLATES)
    if not isinstance(templates, list | tuple) or not templates or not all(isinstance(t, str) and "{}" in t for t in templates):
        raise UsageError(f"{what}: templates must be a list of prompt strings with {{}} for the class name, e.g. [\"a photo of a {{}}.\"]")

    def fetch(index: int) -> Any:
        return open_rgb(paths[index])

    return TaskData(train=ImageTaskDataset(fetch, train_pool[train_idx], train_y, ctx.task_index),
                    test=ImageTaskDataset(fetch, test_pool[test_idx], test_y, ctx.task_index),
                    class_names=tuple(names[c] for c in chosen), templates=tuple(templates))


# ---- JSONL -----------------------------------------------------------------------------------
def read_jsonl(path: Path, fields: Sequence[str], what: str) -> list[dict[str, Any]]:
    """Every line of ``path`` as an object holding ``fields`` (blank lines skipped).

    Raises:
        MissingAssetError: no such file.
        DataError: a line that is not a JSON object or lacks a field (naming file and line).
    """
    if not path.is_file():
        raise MissingAssetError(f"{what}: JSONL file {path} does not exist")
    rows = []
    with path.open(encoding="utf-8", errors="strict") as handle:
        try:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError as exc:
                    raise DataError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
                if not isinstance(row, dict):
                    raise DataError(f"{path}:{number}: expected a JSON object with {', '.join(fields)}, got {type(row).__name__}")
                missing = [f for f in fields if not isinstance(row.get(f), str | int | float) or isinstance(row.get(f), bool)]
                if missing:
                    raise DataError(f"{path}:{number}: field {missing[0]!r} is missing or not a string/number")
                rows.append(row)
        except UnicodeDecodeError:
            raise DataError(f"{path}: not UTF-8 text") from None
    if not rows:
        raise DataError(f"{what}: JSONL file {path} holds no example")
    return rows


def _jsonl_parts(options: Mapping[str, Any], ctx: LoaderContext, fields: Sequence[str], what: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    train = read_jsonl(resolve_path(options.get("train"), ctx, what, "train"), fields, what)
    if options.get("test") is not None:
        return train, read_jsonl(resolve_path(options["test"], ctx, what, "test"), fields, what)
    order = dataset_rng(int(options.get("split_seed", ctx.split_seed)), str(options.get("train")), "split").permutation(len(train))
    cut = int(round(len(train) * (1 - _test_fraction(options, what))))
    if cut in (0, len(train)):
        raise DataError(f"{what}: {len(train)} example(s) cannot be split into train and test with test_fraction {options.get('test_fraction', DEFAULT_TEST_FRACTION)}")
    return [train[i] for i in order[:cut]], [train[i] for i in order[cut:]]


def load_jsonl(options: Mapping[str, Any], ctx: LoaderContext) -> TaskData:
    """One task from JSONL files (see the module docstring)."""
    what = f"jsonl task {ctx.task_index + 1}"
    kind = options.get("task", "generation")
    if kind not in ("generation", "classification"):
        raise UsageError(f"{what}: task must be 'generation' or 'classification', got {kind!r}")
    budget = options.get("max_new_tokens", 32)
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise UsageError(f"{what}: max_new_tokens must be a positive integer, got {budget!r}")
    if kind == "generation":
        prompt, answer = str(options.get("prompt_field", "prompt")), str(options.get("answer_field", "answer"))
        train, test = _jsonl_parts(options, ctx, (prompt, answer), what)
        n_train = options.get("n_train")
        if n_train is not None:
            if isinstance(n_train, bool) or not isinstance(n_train, int) or n_train < 1:
                raise UsageError(f"{what}: n_train must be a positive integer, got {n_train!r}")
            order = dataset_rng(int(options.get("shot_seed", ctx.split_seed)), "n_train").permutation(len(train))
            train = [train[i] for i in sorted(order[:n_train])]

        def generation(rows: list[dict[str, Any]]) -> ExampleListDataset:
            return ExampleListDataset([{"prompt": str(r[prompt]), "answer": str(r[answer]), "task_id": ctx.task_index, "max_new_tokens": budget}
                                       for r in rows])

        return TaskData(train=generation(train), test=generation(test))
    text, label = str(options.get("text_field", "text")), str(options.get("label_field", "label"))
    train, test = _jsonl_parts(options, ctx, (text, label), what)
    found = sorted({str(r[label]) for r in train + test})
    labels = options.get("labels")
    if labels is not None:
        if not isinstance(labels, list) or not all(isinstance(v, str) for v in labels) or len(set(labels)) != len(labels):
            raise UsageError(f"{what}: labels must be a list of distinct label strings")
        extra = sorted(set(found) - set(labels))
        if extra:
            raise DataError(f"{what}: the files use labels not in the labels option: {', '.join(extra[:5])}")
        found = list(labels)
    index = {name: i for i, name in enumerate(found)}
    k_shot = parse_k_shot(options, what)
    if k_shot is not None:
        targets = np.asarray([index[str(r[label])] for r in train], dtype=np.int64)
        rng = dataset_rng(int(options.get("shot_seed", ctx.split_seed)), "shots")
        chosen, _ = select_examples(targets, [c for c in range(len(found)) if (targets == c).any()], k_shot, rng)
        train = [train[i] for i in chosen]

    def classification(rows: list[dict[str, Any]]) -> ExampleListDataset:
        return ExampleListDataset([{"text": str(r[text]), "prompt": str(r[text]), "answer": str(r[label]), "y": index[str(r[label])],
                                    "task_id": ctx.task_index, "max_new_tokens": budget} for r in rows])

    return TaskData(train=classification(train), test=classification(test), class_names=tuple(found))
