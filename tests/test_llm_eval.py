"""The LLM evaluation path: planned batches, early-exit greedy decoding, scores back in test order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from clbench import registry
from clbench.api import Experience, ExampleListDataset
from clbench.api.benchmark import TrainSettings
from clbench.backbones.llm_eval import greedy_decode, left_pad, length_sorted_batches
from clbench.training import evaluate
from test_llm_backbones import save_tiny_llama


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama-eval"))


def test_length_sorted_batches_longest_first_and_stable() -> None:
    encoded = [([1], [2]), ([1, 1, 1], [2]), ([1], [2]), ([1, 1], [2, 2, 2])]
    assert length_sorted_batches(encoded, 2) == [[3, 1], [0, 2]]


def test_greedy_decode_equals_generate_with_rows_leaving_at_eos(tiny_llama: Path) -> None:
    from transformers import AutoModelForCausalLM, GenerationConfig

    model = AutoModelForCausalLM.from_pretrained(tiny_llama, local_files_only=True).eval()
    torch.manual_seed(1)
    prompts = [torch.randint(3, 200, (n,)).tolist() for n in (3, 9, 5, 12, 7)]
    with torch.no_grad():  # the most frequent first tokens become eos, so several rows stop early
        firsts = [int(model(input_ids=torch.tensor([p])).logits[0, -1].argmax()) for p in prompts]
    eos = max(set(firsts), key=firsts.count)
    assert 0 < firsts.count(eos) < len(prompts)
    ours = greedy_decode(model, prompts, 6, 0, [eos], torch.device("cpu"))
    input_ids, attention = left_pad(prompts, 0)
    config = GenerationConfig(max_new_tokens=6, do_sample=False, num_beams=1, pad_token_id=0, eos_token_id=eos)
    with torch.no_grad():
        reference = model.generate(input_ids=input_ids, attention_mask=attention, generation_config=config)[:, input_ids.shape[1]:].tolist()
    for mine, theirs in zip(ours, reference, strict=True):
        cut = theirs.index(eos) + 1 if eos in theirs else len(theirs)
        assert mine == theirs[:cut]
    assert any(len(m) < 6 for m in ours) and any(len(m) == 6 for m in ours)


@pytest.mark.parametrize("metric", ["exact_match", "rouge_l"])
def test_evaluate_returns_scores_in_test_order(tiny_llama: Path, metric: str) -> None:
    """Batches run longest first, but per-example scores come back in test order (one at a time gives the reference)."""
    backbone = registry.build_backbone(f"hf:{tiny_llama}")
    words = ["a", "bb bb bb bb", "ccc", "dd dd dd dd dd dd dd", "e e", "ffff ffff ffff"]
    items = [{"prompt": f"say {w}", "answer": w, "task_id": 0, "max_new_tokens": 4} for w in words]
    exp = Experience(index=0, name="t", train=ExampleListDataset(items), test=ExampleListDataset(items), metric=metric)
    with torch.no_grad():  # a logit bias so that some answers are right
        backbone.model.lm_head.weight.normal_(0, 2.0)
    scores: list[np.ndarray] = []
    row = evaluate(backbone, [exp], TrainSettings(eval_batch_size=4), progress=False, per_example=scores)
    single = [backbone.score(backbone.collate([ex]), exp).item() for ex in items]
    np.testing.assert_allclose(scores[0], single, atol=1e-6)
    assert row[0] == pytest.approx(float(np.mean(single)))
    plan = list(backbone.eval_batches(exp.test, 4))
    assert [idx for idx, _ in plan] == [[3, 5, 1, 2], [4, 0]]
    assert next(iter(backbone.eval_batches(exp.test, 4)))[1] is plan[0][1], "the plan is built once per run"
