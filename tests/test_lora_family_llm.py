"""The LoRA-family baselines (olora, inflora, smora, flylora) on an LLM: a tiny Llama saved to disk
and reloaded through the ``hf:<dir>`` spec, two generated instruction skills scored by exact match,
each strategy on its default LLM targets (q, v; InfLoRA k, v)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from clbench.runner import RunOptions, run
from test_llm_backbones import byte_tokenizer

BENCHMARK = """version = 1
description = "Two generated instruction skills on a tiny Llama."
protocol = "domain-incremental"
backbone = "hf:{model}"
[train]
epochs = 1
batch_size = 8
eval_batch_size = 16
lr = 0.001
[[tasks]]
name = "uppercase"
loader = "generated-instructions"
metric = "exact_match"
options = {{ skill = "uppercase", n_train = 8, n_test = 4 }}
[[tasks]]
name = "plural"
loader = "generated-instructions"
metric = "exact_match"
options = {{ skill = "plural", n_train = 8, n_test = 4 }}
"""


@pytest.fixture(scope="module")
def llm_bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny-llama-baselines")
    tok = byte_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, pad_token_id=0, eos_token_id=1, bos_token_id=None, max_position_embeddings=256)
    LlamaForCausalLM(config).save_pretrained(folder / "model")
    tok.save_pretrained(folder / "model")
    bench = folder / "skills-tiny.toml"
    bench.write_text(BENCHMARK.format(model=folder / "model"), encoding="utf-8")
    return bench


@pytest.mark.slow  # four LLM runs: ~20 s of CPU, minutes of wall time on a loaded 2-core machine
@pytest.mark.parametrize(("strategy", "overrides", "adapted"), [
    ("olora", {"rank": "2"}, 4),  # q, v of 2 layers
    ("inflora", {"rank": "2"}, 4),  # k, v of 2 layers
    ("smora", {"rank": "4", "k": "2"}, 4),
    ("flylora", {"rank": "4", "k": "2"}, 4),
])
def test_baseline_trains_a_tiny_llama_end_to_end(llm_bench: Path, tmp_path: Path, strategy: str, overrides: dict[str, str], adapted: int) -> None:
    result = run(RunOptions(benchmark=str(llm_bench), strategy=strategy, seed=0, out=tmp_path, progress=False, overrides=overrides))
    assert result["status"] == "complete" and result["backbone"]["kind"] == "llm"
    assert len(result["matrix"]["values"]) == 3
    assert all(t["steps"] == 1 and t["final_loss"] > 0 for t in result["tasks"])
    assert result["telemetry"][-1]["adapted_layers"] == adapted
    # Only adapters train: far fewer trainable parameters than the model holds.
    assert 0 < result["backbone"]["trainable_parameters"] < result["backbone"]["parameters"] / 2
