"""Text loaders on small on-disk fixtures in each source's real format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clbench.data import LoaderContext
from clbench.data.fortunes import load_fortunes_task, read_fortunes
from clbench.data.text import load_cl_text_task, olora_prompt, DATASETS, sample_per_class
from clbench.data.trace import load_trace_task
from clbench.errors import MissingAssetError, UsageError


def write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")


# ---- O-LoRA CL_Benchmark layout -------------------------------------------------------------
def test_olora_layout_gives_olora_prompts_and_label_words(tmp_path: Path) -> None:
    folder = tmp_path / "CL_Benchmark" / "TC" / "agnews"
    labels = ["World", "Sports", "Business", "Science or Technology"]
    write_json(folder / "labels.json", labels)
    write_json(folder / "train.json", [{"label": "Sports", "sentence": "Title: Win\nText: They won.\n"},
                                       {"label": "World", "sentence": "Title: Talks\nText: Leaders met.\n"}])
    write_json(folder / "test.json", [{"label": "Business", "sentence": "Title: Shares\nText: Up 3%.\n"}])
    data = load_cl_text_task({"dataset": "agnews"}, LoaderContext(task_index=2, data_root=tmp_path))
    assert data.class_names == tuple(labels)
    first = data.train[0]
    assert first["prompt"] == ("Task:TC\nDataset:agnews\nWhat is the topic of the following paragraph? Choose one from the option.\n"
                               "Option: World, Sports, Business, Science or Technology \nTitle: Win\nText: They won.\n\nAnswer:")
    assert (first["answer"], first["y"], first["task_id"], first["max_new_tokens"]) == ("Sports", 1, 2, 50)
    assert [e["answer"] for e in data.test] == ["Business"]


def test_copa_prompt_has_no_instruction_or_options() -> None:
    assert olora_prompt(DATASETS["copa"], "Which sentence ...\nA: x\nB: y") == "Task:COPA\nDataset:COPA\nWhich sentence ...\nA: x\nB: y\nAnswer:"


# ---- Hugging Face datasets (save_to_disk) ---------------------------------------------------
def test_hf_saved_dataset_is_converted_and_sampled_per_class(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    rows = {"sentence1": [f"premise {i}" for i in range(20)], "sentence2": [f"hypothesis {i}" for i in range(20)],
            "label": [i % 2 for i in range(20)], "idx": list(range(20))}
    saved = datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows), "validation": datasets.Dataset.from_dict(rows)})
    saved.save_to_disk(str(tmp_path / "hf" / "rte"))
    ctx = LoaderContext(task_index=0, data_root=tmp_path)
    data = load_cl_text_task({"dataset": "rte", "train_per_class": 3, "test_per_class": 2}, ctx)
    assert data.class_names == ("contradiction", "entailment")
    answers = [e["answer"] for e in data.train]
    assert sorted(answers) == ["contradiction"] * 3 + ["entailment"] * 3  # glue: 0 = entailment, 1 = not_entailment
    example = data.train[0]
    number = int(example["prompt"].split("premise ")[1].split("\n")[0])
    assert example["answer"] == ("entailment" if number % 2 == 0 else "contradiction")
    assert f"sentence 1: premise {number}\nsentence 2: hypothesis {number}\nAnswer:" in example["prompt"]
    assert len(data.test) == 4
    again = load_cl_text_task({"dataset": "rte", "train_per_class": 3, "test_per_class": 2}, ctx)
    assert [e["prompt"] for e in again.train] == [e["prompt"] for e in data.train]  # seeded
    other = load_cl_text_task({"dataset": "rte", "train_per_class": 3, "test_per_class": 2},
                              LoaderContext(task_index=0, data_root=tmp_path, split_seed=1))
    assert [e["prompt"] for e in other.train] != [e["prompt"] for e in data.train]


def test_sample_per_class_caps_each_label() -> None:
    pairs = [(str(i), "a" if i < 8 else "b") for i in range(10)]
    chosen = sample_per_class(pairs, 3, "s")
    assert sorted(label for _, label in chosen) == ["a"] * 3 + ["b"] * 2
    assert len(sample_per_class(pairs, 0, "s")) == 10


def test_missing_text_dataset_is_one_line(tmp_path: Path) -> None:
    pytest.importorskip("datasets")
    with pytest.raises(MissingAssetError) as err:
        load_cl_text_task({"dataset": "amazon"}, LoaderContext(task_index=0, data_root=tmp_path))
    assert "\n" not in str(err.value) and "O-LoRA" in str(err.value) and str(tmp_path) in str(err.value)
    with pytest.raises(MissingAssetError) as err:  # a hub dataset that is not cached: no network attempt
        load_cl_text_task({"dataset": "agnews"}, LoaderContext(task_index=0, data_root=tmp_path))
    assert "\n" not in str(err.value) and "fancyzhx/ag_news" in str(err.value) and "--allow-download" in str(err.value)
    with pytest.raises(UsageError, match="unknown dataset"):
        load_cl_text_task({"dataset": "imagenet"}, LoaderContext(task_index=0))


# ---- TRACE ----------------------------------------------------------------------------------
def trace_fixture(root: Path, task: str = "FOMC", n: int = 5) -> Path:
    folder = root / "TRACE-Benchmark" / "LLM-CL-Benchmark_500" / task
    records = [{"prompt": f"What is the monetary policy stance? Text: {i}\nStance:", "answer": ["dovish", "hawkish"][i % 2]} for i in range(n)]
    write_json(folder / "train.json", records)
    write_json(folder / "eval.json", records[:2])
    write_json(folder / "test.json", records[:3])
    return folder


def test_trace_reads_released_json(tmp_path: Path) -> None:
    trace_fixture(tmp_path)
    data = load_trace_task({"task": "FOMC", "max_train": 4}, LoaderContext(task_index=1, data_root=tmp_path))
    assert len(data.train) == 4 and len(data.test) == 3 and data.class_names == ()
    ex = data.train[1]
    assert ex["answer"] == "hawkish" and ex["chat"] is False and ex["task_id"] == 1
    assert (ex["max_prompt_tokens"], ex["max_new_tokens"]) == (1024, 512)
    assert len(load_trace_task({"task": "FOMC", "split": "eval"}, LoaderContext(task_index=0, data_root=tmp_path)).test) == 2


def test_trace_missing_and_malformed(tmp_path: Path) -> None:
    with pytest.raises(MissingAssetError) as err:
        load_trace_task({"task": "Py150"}, LoaderContext(task_index=0, data_root=tmp_path))
    assert "\n" not in str(err.value) and "Py150" in str(err.value) and "BeyonderXX/TRACE" in str(err.value)
    folder = trace_fixture(tmp_path, "ScienceQA")
    (folder / "train.json").write_text('{"prompt": "not a list"}', encoding="utf-8")
    with pytest.raises(UsageError, match="JSON list"):
        load_trace_task({"task": "ScienceQA"}, LoaderContext(task_index=0, data_root=tmp_path))
    with pytest.raises(UsageError, match="unknown task"):
        load_trace_task({"task": "GSM8K"}, LoaderContext(task_index=0, data_root=tmp_path))


# ---- fortunes -------------------------------------------------------------------------------
def fortunes_fixture(root: Path) -> Path:
    folder = root / "fortunes"
    folder.mkdir(parents=True)
    (folder / "computers").write_text("\n%\n".join(f"Computer quote {i}\n  second line" for i in range(10)) + "\n%\n", encoding="utf-8")
    (folder / "people").write_text("_\bB_\bo_\bl_\bd person 0\n%\n" + "\n%\n".join(f"Person quote {i}" for i in range(1, 10)) + "\n", encoding="utf-8")
    return folder


def test_fortunes_parsing_and_seeded_split(tmp_path: Path) -> None:
    folder = fortunes_fixture(tmp_path)
    quotes = read_fortunes(folder / "people")
    assert quotes[0] == "Bold person 0" and len(quotes) == 10
    assert read_fortunes(folder / "computers")[3] == "Computer quote 3 second line"
    ctx = LoaderContext(task_index=0, data_root=tmp_path)
    data = load_fortunes_task({"categories": ["people", "computers"], "per_class": 10, "test_fraction": 0.2}, ctx)
    assert data.class_names == ("people", "computers")
    assert len(data.train) == 16 and len(data.test) == 4
    train_texts = {e["text"] for e in data.train}
    assert not train_texts & {e["text"] for e in data.test}
    assert all(e["y"] == (0 if e["text"].startswith(("Person", "Bold")) else 1) for e in data.train)
    again = load_fortunes_task({"categories": ["people", "computers"], "per_class": 10}, ctx)
    assert [e["text"] for e in again.test] == [e["text"] for e in data.test]


def test_fortunes_missing_category(tmp_path: Path) -> None:
    fortunes_fixture(tmp_path)
    with pytest.raises(MissingAssetError) as err:
        load_fortunes_task({"categories": ["people", "nonexistent"]}, LoaderContext(task_index=0, data_root=tmp_path))
    assert "apt-get install fortunes" in str(err.value) and "\n" not in str(err.value)
