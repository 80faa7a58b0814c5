"""``trace``: the eight TRACE tasks (Wang et al. 2023) from the released JSON files.

TRACE is distributed as a zip (linked from https://github.com/BeyonderXX/TRACE, "Trace
Benchmark") holding ``LLM-CL-Benchmark_<N>/<task>/{train,eval,test}.json``, each a JSON list of
``{"prompt": ..., "answer": ...}`` records; ``N = 500`` is the protocol of the MoRAM / CoDyRA /
TreeLoRA papers (500 training examples per task). The loader looks for the task folder under
the data root at ``TRACE-Benchmark/LLM-CL-Benchmark_<N>/<task>``, ``LLM-CL-Benchmark_<N>/<task>``
or ``<task>``, in that order.

Prompts are used verbatim, without a chat template (TRACE's collator tokenizes the raw prompt
and appends the answer), truncated from the left to ``max_prompt_tokens`` (1024 in MoRAM's
runner); generation is greedy with ``max_new_tokens`` (512 there). Each task's metric is set in
the benchmark file, following TRACE's ``evaluations/eval_*.py``:

==============  =========================================================
C-STANCE, FOMC  accuracy (whole generated answer against the label)
MeetingBank     ROUGE-L
Py150           edit similarity (fuzz ratio after literal post-processing)
ScienceQA       accuracy of the option letter after ``"Answer: "``
NumGLUE-cm/ds   accuracy
20Minuten       SARI (the prompt is the source)
==============  =========================================================

Options:
    task: the task folder name (one of :data:`TASKS`).
    size: the released sample size in the folder name (default 500).
    split: the evaluation file, ``test`` (default) or ``eval``.
    max_train, max_test: keep only the first examples of each file (smoke runs).
    max_prompt_tokens: left truncation of prompts (default 1024).
    max_new_tokens: generation budget (default 512).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from clbench.api.stream import ExampleListDataset
from clbench.data import LoaderContext, TaskData
from clbench.errors import MissingAssetError, UsageError

TASKS = ("C-STANCE", "FOMC", "MeetingBank", "Py150", "ScienceQA", "NumGLUE-cm", "NumGLUE-ds", "20Minuten")
#: Each task's metric in TRACE's evaluation code (as named in clbench.textmetrics).
TASK_METRIC = {"C-STANCE": "accuracy", "FOMC": "accuracy", "MeetingBank": "rouge_l", "Py150": "edit_similarity",
               "ScienceQA": "choice_accuracy", "NumGLUE-cm": "accuracy", "NumGLUE-ds": "accuracy", "20Minuten": "sari"}
DOWNLOAD_HINT = ("download the TRACE zip linked from https://github.com/BeyonderXX/TRACE (README, 'Trace Benchmark'), "
                 "unzip it under the data root (--data-root or CLBENCH_DATA_ROOT)")


def task_folder(task: str, size: int, root: Path | None) -> Path:
    """The folder holding ``task``'s JSON files.

    Raises:
        MissingAssetError: no candidate folder holds ``train.json``.
    """
    bench = f"LLM-CL-Benchmark_{size}"
    candidates = [] if root is None else [root / "TRACE-Benchmark" / bench / task, root / bench / task, root / task]
    for folder in candidates:
        if (folder / "train.json").is_file():
            return folder
    looked = ", ".join(str(c) for c in candidates) if candidates else "no data root given"
    raise MissingAssetError(f"dataset TRACE/{task}: train.json not found (looked in {looked}); {DOWNLOAD_HINT}")


def read_records(path: Path) -> list[dict[str, str]]:
    """The ``{"prompt", "answer"}`` records of one TRACE JSON file."""
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read TRACE file {path}: {exc}") from None
    if not isinstance(records, list) or any(not isinstance(r, dict) or "prompt" not in r or "answer" not in r for r in records):
        raise UsageError(f"TRACE file {path} must be a JSON list of {{'prompt', 'answer'}} objects")
    return records


def load_trace_task(options: Mapping[str, Any], ctx: LoaderContext) -> TaskData:
    """One TRACE task (generation; no classes)."""
    task = str(options.get("task", ""))
    if task not in TASKS:
        raise UsageError(f"trace loader: unknown task {task!r}; known: {', '.join(TASKS)}")
    split = str(options.get("split", "test"))
    if split not in ("test", "eval"):
        raise UsageError(f"trace loader: split must be 'test' or 'eval', got {split!r}")
    folder = task_folder(task, int(options.get("size", 500)), ctx.data_root)
    if not (folder / f"{split}.json").is_file():
        raise MissingAssetError(f"dataset TRACE/{task}: {folder / f'{split}.json'} is missing; {DOWNLOAD_HINT}")
    train, test = read_records(folder / "train.json"), read_records(folder / f"{split}.json")
    if options.get("max_train"):
        train = train[: int(options["max_train"])]
    if options.get("max_test"):
        test = test[: int(options["max_test"])]
    extra = {"task_id": ctx.task_index, "chat": False, "max_prompt_tokens": int(options.get("max_prompt_tokens", 1024)),
             "max_new_tokens": int(options.get("max_new_tokens", 512))}

    def examples(records: list[dict[str, str]]) -> ExampleListDataset:
        return ExampleListDataset([{"prompt": str(r["prompt"]), "answer": str(r["answer"]), **extra} for r in records])

    return TaskData(train=examples(train), test=examples(test))
