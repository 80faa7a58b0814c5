"""``clbench check``: every dataset and weight file a benchmark needs, all missing ones at once.

A run stops at the first missing asset; MTIL needs eleven datasets plus CLIP weights, so finding
them one run at a time is slow. :func:`check_benchmark` asks every task's loader (downloads off)
and the backbone's resolver, collects each :class:`~clbench.errors.MissingAssetError` (whose
message says how to get the asset) and each unusable dataset (:class:`~clbench.errors.DataError`:
an empty class folder, a malformed JSONL line), and returns them all. Nothing is written or
downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from clbench import registry
from clbench.errors import DataError, MissingAssetError, UsageError


@dataclass(frozen=True)
class Problem:
    """One missing or unusable asset: what it is and the loader's or resolver's one-line advice."""

    what: str
    detail: str


def _check_tasks(spec: object, loaders: dict[str, object], data_root: Path | None) -> tuple[list[str], list[Problem]]:
    from clbench.data import BUILTIN_LOADERS, LoaderContext, _builtin_loader, default_data_root

    root = data_root if data_root is not None else default_data_root()
    present: list[str] = []
    problems: list[Problem] = []
    for index, task in enumerate(spec.tasks):  # type: ignore[attr-defined]
        if task.loader not in BUILTIN_LOADERS and task.loader not in loaders:
            raise UsageError(f"task {task.name!r}: unknown loader {task.loader!r}")
        loader = loaders[task.loader] if task.loader in loaders else _builtin_loader(task.loader)
        label = f"task {task.name} (loader {task.loader})"
        try:
            data = loader(task.options, LoaderContext(task_index=index, data_root=root, allow_download=False))  # type: ignore[operator]
        except (MissingAssetError, DataError) as exc:
            problems.append(Problem(label, str(exc)))
            continue
        if len(data.test) == 0 or (not task.eval_only and len(data.train) == 0):
            problems.append(Problem(label, "loads but has no " + ("test" if len(data.test) == 0 else "training") + " examples"))
            continue
        present.append(label)
    return present, problems


def _merge_same(problems: list[Problem]) -> list[Problem]:
    """One entry per distinct problem: ten tasks split from one missing dataset are one line
    naming the ten tasks."""
    by_detail: dict[str, list[str]] = {}
    for problem in problems:
        by_detail.setdefault(problem.detail, []).append(problem.what)
    merged = []
    for detail, whats in by_detail.items():
        if len(whats) == 1:
            merged.append(Problem(whats[0], detail))
        else:
            names = [w.removeprefix("task ") for w in whats]
            loaders = {n.rpartition(" (")[2] for n in names}
            if len(loaders) == 1:  # "tasks a, b, c (loader cifar100)"
                names = [n.rpartition(" (")[0] for n in names[:-1]] + [names[-1]]
            merged.append(Problem(f"tasks {', '.join(names)}", detail))
    return merged


def check_backbone(spec: str) -> Problem | None:
    """Whether the backbone's weights are here (without loading large models when a resolver can
    tell from the files)."""
    _, bare = registry.split_backbone_spec(spec)
    kind, _, target = bare.partition(":")
    label = f"backbone {spec}"
    try:
        if kind == "clip":
            from clbench.backbones.clip_loading import parse_spec, resolve_weights

            resolve_weights(parse_spec(bare), bare)
        elif kind in ("hf", "hf-seq2seq"):
            from clbench.asset_policy import downloads_allowed
            from clbench.backbones.hf_loading import resolve_source

            where, source = resolve_source(bare, target)
            if where == "hub" and not downloads_allowed():
                from huggingface_hub import try_to_load_from_cache

                if not isinstance(try_to_load_from_cache(str(source), "config.json"), str):
                    raise MissingAssetError(f"hub model {source!r} is not in the Hugging Face cache; set CLBENCH_ALLOW_DOWNLOAD=1 "
                                            "(without HF_HUB_OFFLINE) to download it on the first run, or pass hf:<local folder>")
        else:
            registry.build_backbone(spec)
    except MissingAssetError as exc:
        return Problem(label, str(exc))
    return None


def check_benchmark(benchmark: str, backbone: str | None = None, data_root: Path | None = None) -> tuple[list[str], list[Problem]]:
    """``(present, problems)`` for every task of ``benchmark`` and its (or the given) backbone.

    Raises:
        UsageError: unknown benchmark or loader, a bad backbone spec.
    """
    spec, loaders = registry.load_benchmark(benchmark)
    present, problems = _check_tasks(spec, dict(loaders), data_root)
    problems = _merge_same(problems)
    backbone_spec = backbone or spec.backbone
    problem = check_backbone(backbone_spec)
    if problem is None:
        present.append(f"backbone {backbone_spec}")
    else:
        problems.append(problem)
    return present, problems
