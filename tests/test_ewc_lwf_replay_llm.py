"""ewc, lwf and replay on a causal LM: a tiny random Llama and byte-level tokenizer saved with
save_pretrained and loaded through the real ``hf:<dir>`` path. LwF distills the answer-token
distributions over the vocabulary; all three run end to end in the runner."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from clbench.api import RunContext, TrainSettings
from clbench.api.benchmark import load_benchmark_file
from clbench.data import build_stream
from clbench.registry import build_backbone
from clbench.runner import RunOptions, run
from clbench.strategies.lwf import LwF, LwFConfig, distillation_kl


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, width-32 Llama with a byte-level BPE tokenizer (no merges), on disk."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-llama")
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {token: i for i, token in enumerate(["<pad>", "<eos>", "<unk>", *alphabet])}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=256, pad_token_id=0, eos_token_id=1, bos_token_id=1)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.fixture
def llm_bench(tiny_llama: Path, tmp_path: Path) -> Path:
    path = tmp_path / "tiny-skills.toml"
    path.write_text(f"""version = 1
description = "Two generated skills on a tiny random Llama."
protocol = "domain-incremental"
backbone = "hf:{tiny_llama}"
[train]
iterations = 3
batch_size = 4
eval_batch_size = 16
lr = 0.001
[[tasks]]
name = "uppercase"
loader = "generated-instructions"
metric = "exact_match"
options = {{ skill = "uppercase", n_train = 12, n_test = 6 }}
[[tasks]]
name = "plural"
loader = "generated-instructions"
metric = "exact_match"
options = {{ skill = "plural", n_train = 12, n_test = 6 }}
""", encoding="utf-8")
    return path


def test_lwf_distills_answer_token_distributions(llm_bench: Path) -> None:
    spec = load_benchmark_file(llm_bench)
    stream = build_stream(spec)
    backbone = build_backbone(spec.backbone)
    backbone.bind(stream)
    strategy = LwF(LwFConfig(), RunContext(stream=stream, train=TrainSettings(), device=torch.device("cpu"), seed=0))
    strategy.setup(backbone)
    task = stream.tasks[1]
    strategy.before_task(task)
    batch = backbone.collate([task.train[i] for i in range(3)])
    assert float(strategy.distillation(batch).detach()) == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        backbone.model.lm_head.weight.add_(0.5 * torch.randn_like(backbone.model.lm_head.weight))
        old = strategy.teacher.outputs(batch)
        new = backbone.outputs(batch)
    assert old.shape == (int((batch["labels"] != -100).sum()), backbone.model.config.vocab_size)
    expected = distillation_kl(old, new, 2.0)
    assert float(strategy.distillation(batch).detach()) == pytest.approx(float(expected), rel=1e-5)
    assert float(expected) > 0


@pytest.mark.slow  # end-to-end training runs; the mechanism tests above run by default
@pytest.mark.parametrize(("strategy", "overrides"), [("ewc", {"fisher_samples": "6"}), ("lwf", {}), ("replay", {"buffer_size": "6"})])
def test_runs_end_to_end_on_a_causal_lm(strategy: str, overrides: dict[str, str], llm_bench: Path, tmp_path: Path) -> None:
    result = run(RunOptions(benchmark=str(llm_bench), strategy=strategy, out=tmp_path, progress=False, overrides=overrides))
    assert result["status"] == "complete"
    assert result["train"]["lr"] == 1e-5  # full fine-tuning of an LLM defaults to llm_lr, as finetune does
    last = result["telemetry"][-1]
    if strategy == "ewc":
        assert last["ewc_tasks"] == 2 and last["fisher_mass"] > 0
    elif strategy == "lwf":
        assert last["lwf_distill_kl"] is not None and last["lwf_distill_kl"] >= 0
    else:
        assert last["buffer_size"] == 6 and set(last["buffer_tasks"]) == {"uppercase", "plural"}
