"""Dataset loaders by registered name, and the stream builder that turns a benchmark into tasks.

A benchmark task names its loader (``loader = "sklearn-digits"``); the name is looked up in
:data:`LOADERS` and in the ``LOADERS`` mapping of the benchmark's plugin package, never imported
from a path, so a benchmark file cannot run arbitrary code. A loader returns one task's data
with *local* labels (0..C-1 over the task's ``class_names``); the stream builder maps them to
the benchmark's global label space. Domain-incremental benchmarks share labels by class name
(every domain re-uses the same classes); every other protocol gives each task's classes their
own ids, offset by the classes of the tasks before it (so X-TAIL's union head keeps two
domains' "background" classes apart, as the official code's per-domain offsets do).
"""

from __future__ import annotations

from importlib import import_module
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from clbench.api.benchmark import BenchmarkSpec
from clbench.api.stream import ExampleListDataset, Experience, Stream, TensorTaskDataset
from clbench.asset_policy import default_data_root, downloads_allowed
from clbench.errors import DataError, UsageError



@dataclass(frozen=True)
class LoaderContext:
    """What a loader is told about where and how to load.

    Attributes:
        task_index: the task's position in the benchmark (stamped on examples as ``task_id``).
        data_root: folder holding datasets (``--data-root`` or ``$CLBENCH_DATA_ROOT``).
        allow_download: whether the loader may download missing data.
        split_seed: seed of protocol-level randomness (splits, shot sampling, generated
            examples); fixed by the benchmark, independent of the run seed.
    """

    task_index: int
    data_root: Path | None = None
    allow_download: bool = False
    split_seed: int = 0


@dataclass(frozen=True)
class TaskData:
    """One task's data as a loader returns it (labels local to the task).

    Attributes:
        train, test: the task's examples (``dict`` items; labels ``y`` local to the task).
        class_names: human-readable class names, index = local label (empty for generation).
        input_shape: shape of one tensor input (tensor data only).
        templates: zero-shot prompt templates with ``{}`` for the class name (CLIP heads).
    """

    train: Dataset[Any]
    test: Dataset[Any]
    class_names: tuple[str, ...] = ()
    input_shape: tuple[int, ...] | None = None
    templates: tuple[str, ...] = ()


Loader = Callable[[Mapping[str, Any], LoaderContext], TaskData]


# Built-in loaders by name -> "module:function", imported on first use so that a benchmark
# over digits never imports transformers or open_clip.
BUILTIN_LOADERS = {
    "sklearn-digits": "clbench.data.digits:load_digits_task",
    "generated-instructions": "clbench.data.instructions:load_instruction_task",
    "general-knowledge": "clbench.data.instructions:load_knowledge_probe",
    # images (torchvision layouts, released folder layouts; see docs/backbones-clip.md)
    "aircraft": "clbench.data.vision:load_aircraft",
    "caltech101": "clbench.data.vision:load_caltech101",
    "cifar100": "clbench.data.vision:load_cifar100",
    "dtd": "clbench.data.vision:load_dtd",
    "eurosat": "clbench.data.vision:load_eurosat",
    "flowers102": "clbench.data.vision:load_flowers102",
    "food101": "clbench.data.vision:load_food101",
    "mnist": "clbench.data.vision:load_mnist",
    "oxford-pets": "clbench.data.vision:load_oxford_pets",
    "stanford-cars": "clbench.data.vision:load_stanford_cars",
    "sun397": "clbench.data.vision:load_sun397",
    "imagenet-r": "clbench.data.vision_folders:load_imagenet_r",
    "domainnet": "clbench.data.vision_folders:load_domainnet",
    "fashion-mnist": "clbench.data.vision_folders:load_fashion_mnist",
    "fortunes": "clbench.data.fortunes:load_fortunes_task",
    "cl-text": "clbench.data.text:load_cl_text_task",
    "trace": "clbench.data.trace:load_trace_task",
    # your own data, declared in a benchmark TOML (docs/custom-benchmarks.md)
    "image-folder": "clbench.data.custom:load_image_folder",
    "jsonl": "clbench.data.custom:load_jsonl",
}


def _builtin_loader(name: str) -> Loader:
    module, _, attr = BUILTIN_LOADERS[name].partition(":")
    return getattr(import_module(module), attr)  # type: ignore[no-any-return]


def build_stream(
    spec: BenchmarkSpec,
    *,
    extra_loaders: Mapping[str, Loader] | None = None,
    data_root: Path | None = None,
    allow_download: bool | None = None,
) -> Stream:
    """Load every task of ``spec`` and assemble the stream with a global label space.

    Raises:
        UsageError: a task names an unknown loader.
        MissingAssetError: a loader's data is missing (raised by the loader).
    """
    extra = dict(extra_loaders or {})
    known = sorted({*BUILTIN_LOADERS, *extra})
    root = data_root if data_root is not None else default_data_root()
    download = downloads_allowed() if allow_download is None else allow_download
    class_names: list[str] = []
    experiences = []
    input_shape: tuple[int, ...] | None = None
    for index, task in enumerate(spec.tasks):
        if task.loader not in known:
            raise UsageError(f"benchmark {spec.name!r} task {task.name!r}: unknown loader {task.loader!r}; known: {', '.join(known)}")
        loader = extra[task.loader] if task.loader in extra else _builtin_loader(task.loader)
        ctx = LoaderContext(task_index=index, data_root=root, allow_download=download)
        data = loader(task.options, ctx)
        global_ids = []
        for name in data.class_names:
            if spec.protocol == "domain-incremental" and name in class_names:
                global_ids.append(class_names.index(name))
                continue
            class_names.append(name)
            global_ids.append(len(class_names) - 1)
        train, test = (_to_global(d, global_ids) for d in (data.train, data.test))
        if data.input_shape is not None:
            input_shape = data.input_shape
        experiences.append(Experience(index=index, name=task.name, train=train, test=test, metric=task.metric,
                                      class_ids=tuple(global_ids), eval_only=task.eval_only, templates=data.templates))
    return Stream(protocol=spec.protocol, experiences=tuple(experiences), class_names=tuple(class_names), input_shape=input_shape)


def check_not_empty(benchmark: str, stream: Stream) -> None:
    """A task with no test example (or a trained task with no training example) has no score:
    the runner refuses it before the run starts (an empty class folder, a class filter that
    matches nothing), instead of a NaN in the accuracy matrix."""
    for exp in stream.experiences:
        for part in ("test",) if exp.eval_only else ("train", "test"):
            if len(getattr(exp, part)) == 0:
                raise DataError(f"benchmark {benchmark!r} task {exp.name!r} has no {part} examples (empty class folders or a class "
                                "selection that matches nothing); check the data under --data-root and the task's options")


def _to_global(dataset: Dataset[Any], global_ids: list[int]) -> Dataset[Any]:
    """Map local labels to global label ids (identity when the task has no classes)."""
    if not global_ids:
        return dataset
    lut = torch.tensor(global_ids, dtype=torch.long)
    if isinstance(dataset, TensorTaskDataset):
        dataset.y = lut[dataset.y]
        return dataset
    if isinstance(dataset, ExampleListDataset):
        return ExampleListDataset([{**e, "y": int(lut[int(e["y"])])} for e in dataset.examples])
    relabel = getattr(dataset, "relabel", None)
    if callable(relabel):  # lazy datasets (image files) relabel without loading their examples
        return relabel(lut)  # type: ignore[no-any-return]
    raise UsageError(f"cannot relabel a {type(dataset).__name__}; loaders return TensorTaskDataset or ExampleListDataset")
