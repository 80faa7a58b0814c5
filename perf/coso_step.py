"""CoSO optimizer step time against AdamW at ViT-B width, full vs randomized SVD, on the CPU.

For each weight shape (768×768: ``attn.proj``; 3072×768: ``mlp.fc1``, m = d_out = 3072) and each
preset (ImageNet-R: r = 50, ℓ = 120; CIFAR-100: r = 15, ℓ = 100; T_gap = 1, so every step takes
an SVD), one step of ``CoSOAdamW`` is timed with an empty history (task 1) and with a history of
``--history`` columns (a later task, so the deflation ``G − M MᵀG`` runs too), against
``torch.optim.AdamW`` on the same weight and gradient. Repetitions alternate between the
optimizers so machine noise hits all alike; figures are medians, and the ratios are CoSO step time
over AdamW step time (the optimizer step only: forward and backward are not included).
Usage::

    python perf/coso_step.py [--steps 5] [--reps 3] [--threads N] [--history 200] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import torch

from clbench.strategies.coso.config import PRESETS
from clbench.strategies.coso.optimizer import CoSOAdamW

SHAPES = ((768, 768), (3072, 768))


def time_steps(optimizer: torch.optim.Optimizer, weight: torch.nn.Parameter, grads: list[torch.Tensor]) -> float:
    """Seconds per ``optimizer.step()`` over the given gradients (after one warm-up step)."""
    weight.grad = grads[0].clone()
    optimizer.step()
    start = time.perf_counter()
    for g in grads:
        weight.grad = g
        optimizer.step()
    return (time.perf_counter() - start) / len(grads)


def measure(shape: tuple[int, int], preset: str, history_cols: int, steps: int, reps: int, seed: int = 0) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(seed)
    m, n = shape
    grads = [torch.randn(m, n, generator=gen) * 1e-3 for _ in range(steps)]
    history = torch.linalg.qr(torch.randn(m, history_cols, generator=gen))[0] if history_cols else None
    cfg = PRESETS[preset]
    samples: dict[str, list[float]] = {"adamw": [], "full": [], "randomized": []}
    for _ in range(reps):
        weight = torch.nn.Parameter(torch.randn(m, n, generator=gen) * 0.02)
        samples["adamw"].append(time_steps(torch.optim.AdamW([weight], lr=1e-4, eps=1e-6, weight_decay=0.0), weight, grads))
        for method in ("full", "randomized"):
            weight = torch.nn.Parameter(torch.randn(m, n, generator=gen) * 0.02)
            opt = CoSOAdamW([{"params": [weight], "coso": True, "proj_rank": cfg.proj_rank, "sketch_rank": cfg.sketch_rank,
                              "update_gap": cfg.update_gap, "svd": method}], lr=1e-4)
            opt.set_history(weight, history)
            samples[method].append(time_steps(opt, weight, grads))
    med = {k: statistics.median(v) for k, v in samples.items()}
    return {
        "shape": f"{m}x{n}", "preset": preset, "history": history_cols,
        "adamw_ms": round(med["adamw"] * 1e3, 3), "coso_full_ms": round(med["full"] * 1e3, 3), "coso_randomized_ms": round(med["randomized"] * 1e3, 3),
        "full_over_adamw": round(med["full"] / med["adamw"], 2), "randomized_over_adamw": round(med["randomized"] / med["adamw"], 2),
        "full_over_randomized": round(med["full"] / med["randomized"], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="timed steps per repetition")
    parser.add_argument("--reps", type=int, default=3, help="repetitions (median reported)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--history", type=int, default=200, help="columns of the historical basis in the later-task rows")
    parser.add_argument("--presets", default="imagenet-r,cifar100", help="comma list of presets (ranks) to time")
    parser.add_argument("--json", default="", help="also write the rows to this file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU; times are per optimizer step (median of {args.reps})")
    header = f"{'shape':>9} {'preset':>10} {'hist':>4} {'AdamW ms':>9} {'full ms':>9} {'rand ms':>9} {'full/AdamW':>10} {'rand/AdamW':>10} {'full/rand':>9}"
    print(header)
    for shape in SHAPES:
        for preset in args.presets.split(","):
            for history in (0, args.history):
                row = measure(shape, preset, history, args.steps, args.reps)
                rows.append(row)
                print(f"{row['shape']:>9} {preset:>10} {history:>4} {row['adamw_ms']:>9.2f} {row['coso_full_ms']:>9.2f} {row['coso_randomized_ms']:>9.2f} "
                      f"{row['full_over_adamw']:>10.1f} {row['randomized_over_adamw']:>10.1f} {row['full_over_randomized']:>9.2f}", flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"torch": torch.__version__, "threads": torch.get_num_threads(), "rows": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
