"""``cl-text``: the O-LoRA standard-CL and long-sequence text tasks, as instructions for LMs.

Fifteen datasets (AG News, Amazon, Yelp, DBpedia, Yahoo; MNLI, QQP, RTE, SST-2 from GLUE; CB,
COPA, BoolQ, MultiRC, WiC from SuperGLUE; IMDB) cast as text-to-label-word generation exactly
as O-LoRA (``src/uie_dataset_lora.py`` with ``--add_task_name --add_dataset_name``) builds its
prompts::

    Task:{group}\\nDataset:{name}\\n{instruction}Option: {label words, comma separated} \\n{sentence}\\nAnswer:

(COPA has no instruction and no option line: ``Task:COPA\\nDataset:COPA\\n{sentence}\\nAnswer:``).
The answer is the label word; the task's metric is ``accuracy`` (normalised match of the
generated label word, O-LoRA's exact match).

Where the data comes from, first match wins:

1. ``<data root>/CL_Benchmark/<group>/<name>/{train,test}.json`` plus ``labels.json``: the
   O-LoRA repository's ``CL_Benchmark`` folder, already sampled for the protocol (e.g. 1000
   training examples per class for AG News), used as is: ``git clone
   https://github.com/cmnfriend/O-LoRA`` and pass ``--data-root O-LoRA``.
2. ``<data root>/hf/<key>``: a ``datasets`` ``DatasetDict`` saved with ``save_to_disk``.
3. the Hugging Face hub id of the dataset, read from the local ``datasets`` cache, or
   downloaded when downloads are allowed (``--allow-download`` / ``$CLBENCH_ALLOW_DOWNLOAD=1``).

Hugging Face rows are turned into O-LoRA's ``sentence`` strings and label words, then sampled
per class with a generator seeded by the benchmark's split seed: ``train_per_class`` (default
1000, the ProgPrompt/O-LoRA budget) and ``test_per_class`` (default 500). O-LoRA's own folder
is the reference; the Hugging Face path reproduces its format, not its exact sample.

Options:
    dataset: one of :data:`DATASETS` (``agnews``, ``amazon``, ..., ``wic``).
    train_per_class, test_per_class: per-class sample sizes for Hugging Face data
        (``0`` keeps every example); ``max_train``/``max_test`` cap either source afterwards.
    max_new_tokens: generation budget when scoring (default 50, O-LoRA's
        ``generation_max_length``).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clbench.api.stream import ExampleListDataset
from clbench.data import LoaderContext, TaskData
from clbench.errors import MissingAssetError, UsageError

Row = Mapping[str, Any]

# O-LoRA's configs/instruction_config.json, by task group.
INSTRUCTIONS = {
    "NLI": 'What is the logical relationship between the "sentence 1" and the "sentence 2"? Choose one from the option.\n',
    "QQP": 'Whether the "first sentence" and the "second sentence" have the same meaning? Choose one from the option.\n',
    "SC": "What is the sentiment of the following paragraph? Choose one from the option.\n",
    "TC": "What is the topic of the following paragraph? Choose one from the option.\n",
    "BoolQA": "According to the following passage, is the question true or false? Choose one from the option.\n",
    "MultiRC": "According to the following passage and question, is the candidate answer true or false? Choose one from the option.\n",
    "WiC": "Given a word and two sentences, whether the word is used with the same sense in both sentence? Choose one from the option.\n",
    "COPA": "",
}


@dataclass(frozen=True)
class TextDataset:
    """One dataset of the benchmark.

    Attributes:
        group: O-LoRA task group (folder and ``Task:`` prefix).
        name: O-LoRA dataset folder name (``Dataset:`` prefix).
        labels: label words in O-LoRA's ``labels.json`` order (the class names).
        hub: Hugging Face ``(dataset id, config)`` or ``None`` when there is no canonical copy.
        splits: the Hugging Face ``(train, test)`` split names (GLUE/SuperGLUE test labels are
            hidden, so their validation split is the test set, as in O-LoRA).
        hf_labels: label word of each Hugging Face integer label.
        label_field: the Hugging Face label column.
        sentence: Hugging Face row -> O-LoRA ``sentence`` text.
    """

    group: str
    name: str
    labels: tuple[str, ...]
    hub: tuple[str, str | None] | None
    splits: tuple[str, str]
    hf_labels: tuple[str, ...]
    label_field: str
    sentence: Callable[[Row], str]


def _title_text(title: str, text: str) -> str:
    return f"Title: {title}\nText: {text}\n"


_SENTIMENT5 = ("very negative", "negative", "neutral", "positive", "very positive")
_YAHOO = ("Society & Culture", "Science & Mathematics", "Health", "Education & Reference", "Computers & Internet", "Sports",
          "Business & Finance", "Entertainment & Music", "Family & Relationships", "Politics & Government")
_DBPEDIA = ("Company", "Educational Institution", "Artist", "Athlete", "Office Holder", "Mean of Transportation", "Building",
            "Natural Place", "Village", "Animal", "Plant", "Album", "Film", "Written Work")

DATASETS: dict[str, TextDataset] = {
    "agnews": TextDataset("TC", "agnews", ("World", "Sports", "Business", "Science or Technology"), ("fancyzhx/ag_news", None),
                          ("train", "test"), ("World", "Sports", "Business", "Science or Technology"), "label",
                          lambda r: f"Text: {r['text']}\n"),
    "dbpedia": TextDataset("TC", "dbpedia", _DBPEDIA, ("fancyzhx/dbpedia_14", None), ("train", "test"), _DBPEDIA, "label",
                           lambda r: _title_text(r["title"], r["content"])),
    "yahoo": TextDataset("TC", "yahoo", _YAHOO, ("community-datasets/yahoo_answers_topics", None), ("train", "test"), _YAHOO, "topic",
                         lambda r: _title_text(r["question_title"], f"{r['question_content']} {r['best_answer']}".strip())),
    "amazon": TextDataset("SC", "amazon", _SENTIMENT5, None, ("train", "test"), _SENTIMENT5, "label",
                          lambda r: _title_text(r["title"], r["content"])),
    "yelp": TextDataset("SC", "yelp", _SENTIMENT5, ("Yelp/yelp_review_full", None), ("train", "test"), _SENTIMENT5, "label",
                        lambda r: f"Text: {r['text']}\n"),
    "imdb": TextDataset("SC", "IMDB", ("Good", "Bad"), ("stanfordnlp/imdb", None), ("train", "test"), ("Bad", "Good"), "label",
                        lambda r: f"Text: {r['text']}\n"),
    "sst2": TextDataset("SC", "SST-2", ("Good", "Bad"), ("nyu-mll/glue", "sst2"), ("train", "validation"), ("Bad", "Good"), "label",
                        lambda r: f"Text: {r['sentence']}"),
    "mnli": TextDataset("NLI", "MNLI", ("neutral", "entailment", "contradiction"), ("nyu-mll/glue", "mnli"),
                        ("train", "validation_matched"), ("entailment", "neutral", "contradiction"), "label",
                        lambda r: f"sentence 1: {r['premise']}\nsentence 2: {r['hypothesis']}"),
    "cb": TextDataset("NLI", "CB", ("entailment", "contradiction", "neutral"), ("aps/super_glue", "cb"), ("train", "validation"),
                      ("entailment", "contradiction", "neutral"), "label",
                      lambda r: f"sentence 1: {r['premise']}\nsentence 2: {r['hypothesis']}"),
    "rte": TextDataset("NLI", "RTE", ("contradiction", "entailment"), ("nyu-mll/glue", "rte"), ("train", "validation"),
                       ("entailment", "contradiction"), "label",
                       lambda r: f"sentence 1: {r['sentence1']}\nsentence 2: {r['sentence2']}"),
    "qqp": TextDataset("QQP", "QQP", ("False", "True"), ("nyu-mll/glue", "qqp"), ("train", "validation"), ("False", "True"), "label",
                       lambda r: f"first sentence: {r['question1']}\nsecond sentence: {r['question2']}"),
    "boolq": TextDataset("BoolQA", "BoolQA", ("True", "False"), ("aps/super_glue", "boolq"), ("train", "validation"), ("False", "True"),
                         "label", lambda r: f"question: {r['question']}\npassage: {r['passage']}"),
    "copa": TextDataset("COPA", "COPA", ("A", "B"), ("aps/super_glue", "copa"), ("train", "validation"), ("A", "B"), "label",
                        lambda r: (f'Which sentence is the {r["question"]} of "{r["premise"]}"? Choose one between A and B.\n'
                                   f"A: {r['choice1']}\nB: {r['choice2']}")),
    "multirc": TextDataset("MultiRC", "MultiRC", ("False", "True"), ("aps/super_glue", "multirc"), ("train", "validation"),
                           ("False", "True"), "label",
                           lambda r: f"paragraph: {r['paragraph']}\nquestion: {r['question']}\ncandidate answer: {r['answer']}"),
    "wic": TextDataset("WiC", "WiC", ("True", "False"), ("aps/super_glue", "wic"), ("train", "validation"), ("False", "True"), "label",
                       lambda r: f"word: {r['word']}\n{r['sentence1']}\n{r['sentence2']}"),
}


def olora_prompt(ds: TextDataset, sentence: str) -> str:
    """The O-LoRA instruction prompt for one sentence (task and dataset names prepended)."""
    prefix = f"Task:{ds.group}\nDataset:{ds.name}\n"
    if ds.group == "COPA":
        return f"{prefix}{sentence}\nAnswer:"
    return f"{prefix}{INSTRUCTIONS[ds.group]}Option: {', '.join(ds.labels)} \n{sentence}\nAnswer:"


def _olora_folder(ds: TextDataset, root: Path) -> Path | None:
    folder = root / "CL_Benchmark" / ds.group / ds.name
    return folder if (folder / "train.json").is_file() and (folder / "test.json").is_file() else None


def _read_olora_split(folder: Path, split: str) -> list[tuple[str, str]]:
    try:
        records = json.loads((folder / f"{split}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read {folder / f'{split}.json'}: {exc}") from None
    return [(str(r["sentence"]), str(r["label"])) for r in records]


def _hf_splits(key: str, ds: TextDataset, ctx: LoaderContext) -> tuple[Any, Any]:
    """The Hugging Face train and test splits, from a save_to_disk folder or the datasets cache."""
    import datasets

    if ctx.data_root is not None and (ctx.data_root / "hf" / key).is_dir():
        saved = datasets.load_from_disk(str(ctx.data_root / "hf" / key))
        return saved[ds.splits[0]], saved[ds.splits[1]]
    looked = f"{ctx.data_root}/CL_Benchmark/{ds.group}/{ds.name}, {ctx.data_root}/hf/{key}" if ctx.data_root else "no --data-root given"
    if ds.hub is None:
        raise MissingAssetError(f"dataset {key!r}: not found ({looked}); it has no canonical Hugging Face copy: clone "
                                "https://github.com/cmnfriend/O-LoRA and pass --data-root to it (CL_Benchmark layout)")
    hub_id, config = ds.hub
    offline = datasets.config.HF_HUB_OFFLINE
    try:
        if not ctx.allow_download:
            datasets.config.HF_HUB_OFFLINE = True  # read the local cache only; never reach the network
        loaded = datasets.load_dataset(hub_id, config)
    except Exception as exc:  # datasets raises many types for "not cached"
        how = ("downloading failed: " + str(exc).splitlines()[0]) if ctx.allow_download else "pass --allow-download (or set CLBENCH_ALLOW_DOWNLOAD=1) to download it"
        where = f"Hugging Face cache {datasets.config.HF_DATASETS_CACHE}"
        raise MissingAssetError(f"dataset {key!r} ({hub_id}{'/' + config if config else ''}): not found ({looked}; {where}); {how}, "
                                "or clone https://github.com/cmnfriend/O-LoRA and pass --data-root to it") from None
    finally:
        datasets.config.HF_HUB_OFFLINE = offline
    return loaded[ds.splits[0]], loaded[ds.splits[1]]


def _convert(rows: Any, ds: TextDataset) -> list[tuple[str, str]]:
    out = []
    for row in rows:
        label = int(row[ds.label_field])
        if 0 <= label < len(ds.hf_labels):  # hidden (-1) labels are skipped
            out.append((ds.sentence(row), ds.hf_labels[label]))
    return out


def sample_per_class(pairs: list[tuple[str, str]], per_class: int, seed: str) -> list[tuple[str, str]]:
    """At most ``per_class`` examples of each label, chosen by a generator seeded with ``seed``,
    in a seeded shuffled order (``per_class <= 0`` keeps everything, shuffled)."""
    rng = random.Random(seed)
    order = list(range(len(pairs)))
    rng.shuffle(order)
    taken: dict[str, int] = {}
    chosen = []
    for i in order:
        label = pairs[i][1]
        if per_class <= 0 or taken.get(label, 0) < per_class:
            taken[label] = taken.get(label, 0) + 1
            chosen.append(pairs[i])
    return chosen


def load_cl_text_task(options: Mapping[str, Any], ctx: LoaderContext) -> TaskData:
    """One O-LoRA text task (see the module docstring)."""
    key = str(options.get("dataset", "")).lower()
    if key not in DATASETS:
        raise UsageError(f"cl-text loader: unknown dataset {options.get('dataset')!r}; known: {', '.join(DATASETS)}")
    ds = DATASETS[key]
    folder = _olora_folder(ds, ctx.data_root) if ctx.data_root is not None else None
    if folder is not None:
        train_pairs, test_pairs = _read_olora_split(folder, "train"), _read_olora_split(folder, "test")
    else:
        train_rows, test_rows = _hf_splits(key, ds, ctx)
        seed = f"cl-text/{ctx.split_seed}/{key}"
        train_pairs = sample_per_class(_convert(train_rows, ds), int(options.get("train_per_class", 1000)), seed + "/train")
        test_pairs = sample_per_class(_convert(test_rows, ds), int(options.get("test_per_class", 500)), seed + "/test")
    if options.get("max_train"):
        train_pairs = sample_per_class(train_pairs, 0, f"cl-text/{ctx.split_seed}/{key}/cap")[: int(options["max_train"])]
    if options.get("max_test"):
        test_pairs = test_pairs[: int(options["max_test"])]
    index = {label: i for i, label in enumerate(ds.labels)}
    budget = int(options.get("max_new_tokens", 50))

    def examples(pairs: list[tuple[str, str]]) -> ExampleListDataset:
        # Gold labels outside labels.json (131 MNLI test rows labelled "-" in O-LoRA's file, which
        # O-LoRA keeps and no model can answer) are dropped: they are not a class.
        return ExampleListDataset([{"prompt": olora_prompt(ds, sentence), "answer": label, "y": index[label],
                                    "task_id": ctx.task_index, "max_new_tokens": budget} for sentence, label in pairs if label in index])

    return TaskData(train=examples(train_pairs), test=examples(test_pairs), class_names=ds.labels)
