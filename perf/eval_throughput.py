"""Quickstart evaluation throughput (prompts/s) before and after the planned-batch path, and bf16 vs fp32 answers.

Part ``throughput`` scores every test set of the ``quickstart`` benchmark (its four tasks and the
probe: 500 prompts, teacher-forced exact match as the benchmark does) on the pretrained
SmolLM2-135M three ways, alternating passes so machine noise hits all alike:

* ``before``: the evaluation path as it was (kept below as :func:`evaluate_before`): a DataLoader
  in test order that tokenizes every prompt on every pass, ``torch.no_grad``, fp32 (the quickstart
  ran with ``amp = "none"``);
* ``after fp32``: :func:`clbench.training.evaluate` (test sets tokenized once per run, batched
  longest first, ``torch.inference_mode``) in fp32, to separate the path from the precision;
* ``after``: the same in the quickstart's bf16 autocast.

It also times greedy generation (the path generation metrics take) on 128 quickstart prompts:
``model.generate`` on test-order batches against :func:`clbench.backbones.llm_eval.greedy_decode`
on length-sorted batches (a sequence leaves the batch at eos).

Part ``precision`` scores every test prompt with one checkpoint in fp32 and in bf16 and counts
the answers that differ: the pretrained model, and with ``--run DIR`` the last checkpoint of a
finished ``clbench run quickstart`` run (restored as ``--resume`` restores it; its bf16 answers are
also checked against the run's own ``examples.npz``).

Time is the process's CPU time on one torch thread (``time.process_time``). Usage::

    python perf/eval_throughput.py [--part throughput|precision|both] [--reps 3] [--run runs/quickstart/lora/seed-0]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from clbench import checkpoint, registry
from clbench.api import Experience, RunContext, TrainSettings
from clbench.backbones.hf_causal import CausalLMBackbone
from clbench.backbones.hf_generation import greedy_config
from clbench.backbones.llm_eval import greedy_decode, left_pad, length_sorted_batches
from clbench.data import build_stream
from clbench.example_scores import ExampleScores
from clbench.runner import resolve_train
from clbench.training import autocast, evaluate


@torch.no_grad()
def evaluate_before(backbone: CausalLMBackbone, experiences: Sequence[Experience], settings: TrainSettings) -> list[np.ndarray]:
    """The evaluation path before planned batches: test order, collated (tokenized) on every pass, no_grad."""
    backbone.model.eval()
    out = []
    for exp in experiences:
        kept = []
        for batch in DataLoader(exp.test, batch_size=settings.eval_batch_size, shuffle=False, collate_fn=backbone.collate):
            with autocast(backbone.device, settings.amp):
                kept.append(backbone.score(backbone.move_batch(batch), exp).float())
        out.append(torch.cat(kept).numpy())
    return out


def evaluate_after(backbone: CausalLMBackbone, experiences: Sequence[Experience], settings: TrainSettings) -> list[np.ndarray]:
    scores: list[np.ndarray] = []
    evaluate(backbone, experiences, settings, progress=False, per_example=scores)
    return scores


def quickstart() -> tuple[Any, Any, CausalLMBackbone]:
    spec, loaders = registry.load_benchmark("quickstart")
    stream = build_stream(spec, extra_loaders=loaders)
    backbone = registry.build_backbone(spec.backbone)
    backbone.bind(stream)
    assert isinstance(backbone, CausalLMBackbone)
    return spec, stream, backbone


def throughput(reps: int) -> None:
    spec, stream, backbone = quickstart()
    experiences = stream.experiences
    n = sum(len(e.test) for e in experiences)
    settings = {"before": spec.train.updated(amp="none"), "after fp32": spec.train.updated(amp="none"), "after": spec.train}
    paths = {"before": evaluate_before, "after fp32": evaluate_after, "after": evaluate_after}
    times: dict[str, list[float]] = {k: [] for k in paths}
    results: dict[str, list[np.ndarray]] = {}
    evaluate_after(backbone, experiences, spec.train)  # warm-up; plans the batches once, as a run's row 0 does
    for _ in range(reps):
        for name, path in paths.items():
            start = time.process_time()
            results[name] = path(backbone, experiences, settings[name])
            times[name].append(time.process_time() - start)
    rate = {k: n / statistics.median(v) for k, v in times.items()}
    print(f"quickstart evaluation, teacher-forced exact match: {n} prompts per pass, median of {reps} passes, CPU time, 1 thread")
    for name in paths:
        print(f"  {name:<11} {rate[name]:7.1f} prompts/s  ({statistics.median(times[name]):.2f} s/pass)")
    print(f"  ratio after/before: {rate['after'] / rate['before']:.2f}x  (path alone, fp32: {rate['after fp32'] / rate['before']:.2f}x)")
    same = sum(int((a == b).sum()) for a, b in zip(results["before"], results["after fp32"], strict=True))
    print(f"  fp32 answers equal between the two paths: {same}/{n}")
    generation(backbone, experiences)


def generation(backbone: CausalLMBackbone, experiences: Sequence[Experience], count: int = 128, budget: int = 16) -> None:
    """model.generate on test-order batches against greedy_decode on length-sorted batches."""
    items = [e.test[i] for e in experiences for i in range(len(e.test))][::4][:count]
    prompts = [backbone.encode(ex)[0] for ex in items]
    eos = [int(backbone.eos_id)]
    model = backbone.model.eval()

    def before() -> list[list[int]]:
        out = []
        for i in range(0, len(prompts), 32):
            ids, mask = left_pad(prompts[i:i + 32], backbone.pad_id)
            with torch.no_grad():
                gen = model.generate(input_ids=ids, attention_mask=mask, generation_config=greedy_config(backbone.tokenizer, budget, backbone.pad_id))
            out.extend(gen[:, ids.shape[1]:].tolist())
        return out

    def after() -> list[list[int]]:
        out: list[list[int]] = [[] for _ in prompts]
        for idx in length_sorted_batches([(p, []) for p in prompts], 32):
            with torch.inference_mode():
                for i, tokens in zip(idx, greedy_decode(model, [prompts[i] for i in idx], budget, backbone.pad_id, eos, backbone.device),
                                     strict=True):
                    out[i] = tokens
        return out

    times: dict[str, float] = {}
    texts = {}
    for name, fn in (("before", before), ("after", after)):
        start = time.process_time()
        tokens = fn()
        times[name] = time.process_time() - start
        texts[name] = backbone.tokenizer.batch_decode(tokens, skip_special_tokens=True)
    same = sum(a == b for a, b in zip(texts["before"], texts["after"], strict=True))
    print(f"greedy generation, {len(prompts)} quickstart prompts, up to {budget} new tokens, fp32, CPU time:")
    print(f"  model.generate, test order {len(prompts) / times['before']:6.1f} prompts/s; greedy_decode, longest first "
          f"{len(prompts) / times['after']:6.1f} prompts/s; ratio {times['before'] / times['after']:.2f}x; same text {same}/{len(prompts)}")


def precision(run_dir: Path | None) -> None:
    """fp32 against bf16 answers of one checkpoint: the pretrained model, and a finished quickstart run's last checkpoint."""
    spec, stream, backbone = quickstart()
    names = [e.name for e in stream.experiences]

    def compare(label: str, train: TrainSettings) -> list[np.ndarray]:
        fp32 = evaluate_after(backbone, stream.experiences, train.updated(amp="none"))
        bf16 = evaluate_after(backbone, stream.experiences, train.updated(amp="bf16"))
        differ = [int((a != b).sum()) for a, b in zip(fp32, bf16, strict=True)]
        accs = ", ".join(f"{n} {100 * a.mean():.0f}/{100 * b.mean():.0f}" for n, a, b in zip(names, fp32, bf16, strict=True))
        print(f"  {label}: answers that differ fp32 vs bf16: {sum(differ)}/{sum(len(a) for a in fp32)} {differ}; accuracy fp32/bf16 %: {accs}")
        return bf16

    print("bf16 vs fp32 evaluation of the same checkpoint (quickstart test sets):")
    if run_dir is None:
        compare("row 0 (pretrained)", spec.train)
        return
    results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    strategy_cls, plugin = registry.get_strategy(results["strategy"]["name"])
    config = strategy_cls.Config()
    if config.to_dict() != results["strategy"]["config"]:
        raise SystemExit(f"{run_dir} was run with non-default settings of {plugin.name}; this script restores default-config runs only")
    train = resolve_train(spec, plugin.name, config, backbone.kind)
    strategy = strategy_cls(config, RunContext(stream=stream, train=train, device=backbone.device, seed=0, benchmark=spec.name))
    strategy.setup(backbone)
    folder = run_dir / "checkpoint"
    pointer = checkpoint.read_pointer(folder, len(stream.tasks))
    if pointer is None or pointer["tasks_done"] != len(stream.tasks):
        raise SystemExit(f"{folder} holds no checkpoint after the last task")
    state = checkpoint.load_checkpoint(folder, pointer)
    strategy.load_state_dict(state["strategy"])
    checkpoint.restore_model(backbone.model, state["model"])
    bf16 = compare(f"after task {len(stream.tasks)} ({plugin.name}, {run_dir})", train)
    recorded = ExampleScores.load(run_dir / "examples.npz").rows[-1]
    same = sum(int((a == b).sum()) for a, b in zip(bf16, recorded or [], strict=True))
    print(f"  bf16 answers equal to the run's own last row (examples.npz): {same}/{sum(len(a) for a in bf16)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("throughput", "precision", "both"), default="both")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--run", type=Path, help="precision part: also compare on this finished quickstart run's last checkpoint "
                        "(a run directory such as runs/quickstart/lora/seed-0)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.part in ("throughput", "both"):
        throughput(args.reps)
    if args.part in ("precision", "both"):
        precision(args.run)


if __name__ == "__main__":
    main()
