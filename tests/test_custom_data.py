"""Your own data from TOML alone: image-folder and JSONL tasks, their validation, and clbench check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from battery_support import seed_folder
from test_llm_backbones import save_tiny_llama
from test_vision_fixtures import save_image, save_tiny_clip


def _image_folder(root: Path, classes: tuple[str, ...], per_class: int, offset: int = 0) -> None:
    for label, name in enumerate(classes):
        for i in range(per_class):
            save_image(root / name / f"{i}.png", label + offset, i)


def _image_benchmark(tmp_path: Path) -> tuple[Path, Path]:
    config, checkpoint = save_tiny_clip(tmp_path / "clip")
    data = tmp_path / "data"
    _image_folder(data / "shapes" / "train", ("red_thing", "blue-thing"), 4)
    _image_folder(data / "shapes" / "test", ("red_thing", "blue-thing"), 2)
    _image_folder(data / "more", ("cat", "dog", "fish"), 5, offset=2)
    bench = tmp_path / "my-images.toml"
    bench.write_text(f"""version = 1
description = "Two image-folder tasks: a train/test folder pair and a held-out fraction with few-shot sampling."
protocol = "class-incremental"
backbone = "clip:{config}@{checkpoint}"
strategies = ["lora"]
[train]
iterations = 1
batch_size = 4
eval_batch_size = 16
lr = 0.001
[[tasks]]
name = "shapes"
loader = "image-folder"
options = {{ path = "shapes/train", test_path = "shapes/test", class_names = {{ red_thing = "red square" }} }}
[[tasks]]
name = "animals"
loader = "image-folder"
options = {{ path = "more", test_fraction = 0.4, k_shot = 2, classes = ["cat", "fish"] }}
""", encoding="utf-8")
    return bench, data


def test_image_folder_benchmark_runs_from_toml_and_checks_complete(cli, tmp_path: Path) -> None:
    from clbench import registry
    from clbench.data import build_stream

    bench, data = _image_benchmark(tmp_path)
    spec, _ = registry.load_benchmark(str(bench))
    stream = build_stream(spec, data_root=data)
    shapes, animals = stream.experiences
    assert (len(shapes.train), len(shapes.test)) == (8, 4)
    assert (len(animals.train), len(animals.test)) == (4, 4)  # 2 shots x 2 classes; 40% of 5 held out per class
    assert stream.class_names == ("blue thing", "red square", "cat", "fish")  # sorted folders
    status, stdout, stderr = cli("check", bench, "--data-root", data)
    assert status == 0 and "all present (3 asset(s))" in stdout, stdout + stderr
    status, stdout, stderr = cli("run", bench, "-s", "lora", "--data-root", data, "--out", tmp_path / "runs", "--no-progress", "-S", "rank=2")
    assert status == 0, stderr
    results = json.loads((seed_folder(tmp_path / "runs" / "my-images" / "lora", 0) / "results.json").read_text())
    assert results["matrix"]["columns"] == ["shapes", "animals"] and results["status"] == "complete"


def test_jsonl_generation_and_classification_tasks_run_from_toml(cli, tmp_path: Path) -> None:
    model = save_tiny_llama(tmp_path / "llm")
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps({"q": f"Say {w}", "a": w}) + "\n" for w in ("yes", "no", "up", "down", "left")), encoding="utf-8")
    (tmp_path / "topic.jsonl").write_text("".join(json.dumps({"text": f"item {i}", "label": "even" if i % 2 == 0 else "odd"}) + "\n" for i in range(10)),
                                          encoding="utf-8")
    bench = tmp_path / "my-text.toml"
    bench.write_text(f"""version = 1
description = "JSONL tasks."
protocol = "task-incremental"
backbone = "hf:{model}"
[train]
iterations = 1
batch_size = 2
eval_batch_size = 8
[[tasks]]
name = "qa"
loader = "jsonl"
metric = "exact_match"
options = {{ train = "qa.jsonl", test_fraction = 0.4, prompt_field = "q", answer_field = "a", max_new_tokens = 4 }}
[[tasks]]
name = "topic"
loader = "jsonl"
options = {{ train = "topic.jsonl", task = "classification", k_shot = 2, labels = ["odd", "even"], max_new_tokens = 4 }}
""", encoding="utf-8")
    from clbench import registry
    from clbench.data import build_stream

    spec, _ = registry.load_benchmark(str(bench))
    qa, topic = build_stream(spec, data_root=tmp_path).experiences
    assert (len(qa.train), len(qa.test)) == (3, 2) and {"prompt", "answer"} <= set(qa.test[0])
    assert len(topic.train) == 4 and topic.test[0]["answer"] in ("odd", "even")
    status, _, stderr = cli("run", bench, "-s", "lora", "--data-root", tmp_path, "--out", tmp_path / "runs", "--no-progress")
    assert status == 0, stderr


@pytest.mark.parametrize("case, expected", [
    ("missing-folder", "image folder {root}/nowhere does not exist"),
    ("empty-class", "class folder {root}/imgs/empty holds no image"),
    ("bad-jsonl", "{root}/bad.jsonl:2: not valid JSON"),
    ("jsonl-field", "{root}/bad.jsonl:1: field 'answer' is missing"),
])
def test_bad_custom_data_is_one_line_naming_the_file(cli, tmp_path: Path, case: str, expected: str) -> None:
    _image_folder(tmp_path / "imgs", ("full",), 2)
    (tmp_path / "imgs" / "empty").mkdir()
    lines = {"bad-jsonl": '{"prompt": "a", "answer": "b"}\n{"prompt": \n', "jsonl-field": '{"prompt": "a"}\n'}
    (tmp_path / "bad.jsonl").write_text(lines.get(case, ""), encoding="utf-8")
    options = {"missing-folder": 'loader = "image-folder"\noptions = { path = "nowhere" }',
               "empty-class": 'loader = "image-folder"\noptions = { path = "imgs" }'}.get(case, 'loader = "jsonl"\noptions = { train = "bad.jsonl" }')
    bench = tmp_path / "bad.toml"
    bench.write_text(f'version = 1\ndescription = "bad"\nprotocol = "class-incremental"\nbackbone = "mlp:8"\n[[tasks]]\nname = "t"\n{options}\n',
                     encoding="utf-8")
    status, stdout, stderr = cli("check", bench, "--data-root", tmp_path)
    assert status == 2 and expected.format(root=tmp_path) in stdout, stdout
    status, _, stderr = cli("run", bench, "-s", "finetune", "--data-root", tmp_path, "--out", tmp_path / "runs", "--no-progress")
    assert status == 2 and expected.format(root=tmp_path) in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert not (tmp_path / "runs" / "bad").exists()


def test_check_mtil_lists_all_eleven_datasets_and_the_clip_weights_at_once(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from clbench.backbones import clip_loading

    monkeypatch.setattr(clip_loading, "_cached_pretrained_file", lambda cfg: None)
    monkeypatch.delenv("CLBENCH_DATA_ROOT", raising=False)
    status, stdout, _ = cli("check", "mtil", "--data-root", tmp_path)
    missing = [line for line in stdout.splitlines() if line.startswith("MISSING")]
    assert status == 2 and len(missing) == 12, stdout
    for dataset in ("aircraft", "caltech101", "cifar100", "dtd", "eurosat", "flowers102", "food101", "mnist", "oxford-pets", "stanford-cars", "sun397"):
        assert any(f"(loader {dataset})" in line for line in missing), dataset
    assert "backbone clip:ViT-B-16@openai" in missing[-1] and "--allow-download" in missing[-1]
    assert "12 of 12 asset(s) missing" in stdout


def test_check_names_one_missing_dataset_once_for_all_its_tasks(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLBENCH_DATA_ROOT", raising=False)
    status, stdout, _ = cli("check", "cifar100-split10", "--data-root", tmp_path)
    missing = [line for line in stdout.splitlines() if line.startswith("MISSING")]
    assert status == 2 and len(missing) == 2, stdout  # CIFAR-100 once (ten tasks), the ViT weights
    assert missing[0].startswith("MISSING  tasks cifar100-01, cifar100-02,") and "cifar100-10 (loader cifar100): dataset CIFAR-100" in missing[0]
