"""What would feeding CoSO's sketch a truncated block change? (why the randomized refresh keeps q = ℓ + 1 + p)

CoSO feeds its Frequent Directions sketch (ℓ columns) with each refreshed gradient's top ℓ
singular directions, shrunk by the (ℓ+1)-th squared value. The randomized refresh therefore needs
ℓ + 1 singular values (q = 131 columns at the ImageNet-R preset, r = 50, ℓ = 120), not the r = 50
the projector needs, and that is what keeps its cost several times an AdamW step
(``python perf/coso_step.py --parts floor``). Feeding only the top k < ℓ directions (shrunk by the
(k+1)-th value) would let the range finder take r + p columns; this script measures what the
truncation changes in what CoSO protects at the end of a task.

For synthetic gradient streams (a persistent power-law spectrum with per-step jitter, plus noise;
768 × 768, 80 steps, full SVDs) it feeds one sketch per block size and prints, after the last
step: the directions CoSO would append to the history (``energy_rank`` at ``--threshold``), the
share of the true accumulated energy ``tr(Uᵀ A Aᵀ U) / ‖A‖_F²`` those directions hold, and the
sketch's covariance error ``‖A Aᵀ − S Sᵀ‖₂ / ‖A‖_F²``.

Usage::

    python perf/coso_sketch_block.py
    python perf/coso_sketch_block.py --blocks 120,80,50 --steps 60
"""

from __future__ import annotations

import argparse
import math

import torch

from clbench.strategies.coso.frequent_directions import FrequentDirections
from clbench.strategies.coso.projector import energy_rank

# (spectrum decay exponent, noise level relative to the top singular value): streams from
# noise-dominated to clean low-rank
STREAMS = ((0.9, 0.02), (0.9, 0.002), (0.5, 0.002), (1.2, 0.0))


def stream(m: int, steps: int, decay: float, noise: float, gen: torch.Generator) -> list[torch.Tensor]:
    """Gradients sharing singular subspaces, values ``i^-decay`` jittered ±30 % per step, plus Gaussian noise."""
    u = torch.linalg.qr(torch.randn(m, m, generator=gen))[0]
    v = torch.linalg.qr(torch.randn(m, m, generator=gen))[0]
    spectrum = torch.arange(1, m + 1, dtype=torch.float32).pow(-decay)
    grads = []
    for _ in range(steps):
        jitter = 1.0 + 0.3 * torch.randn(m, generator=gen)
        grads.append((u * (spectrum * jitter)) @ v.t() + 3 * noise * torch.randn(m, m, generator=gen) / math.sqrt(m))
    return grads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=768, help="m = n of the gradients")
    parser.add_argument("--steps", type=int, default=80, help="refreshes fed to the sketch")
    parser.add_argument("--sketch-rank", type=int, default=120, help="ℓ (120: the ImageNet-R preset)")
    parser.add_argument("--blocks", default="120,80,64,50", help="block sizes k fed per step (ℓ = CoSO's block)")
    parser.add_argument("--threshold", type=float, default=0.98, help="CoSO's energy threshold")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    blocks = [int(b) for b in args.blocks.split(",")]
    print(f"{args.dim}x{args.dim}, {args.steps} steps, ℓ = {args.sketch_rank}, threshold {args.threshold}")
    print(f"{'decay':>5} {'noise':>6} {'block':>10} {'appended':>8} {'true energy held':>16} {'cov. error':>10}")
    for decay, noise in STREAMS:
        gen = torch.Generator().manual_seed(0)
        sketches = {k: FrequentDirections(args.dim, args.sketch_rank) for k in blocks}
        covariance = torch.zeros(args.dim, args.dim, dtype=torch.float64)
        for grad in stream(args.dim, args.steps, decay, noise, gen):
            covariance += (grad @ grad.t()).double()
            u, s, _ = torch.linalg.svd(grad, full_matrices=False)
            for k, sketch in sketches.items():
                sketch.update_from_svd(u, s, block_rank=k)
        total = float(torch.trace(covariance))
        for k, sketch in sketches.items():
            kept = energy_rank(sketch.sigma, args.threshold)
            basis = sketch.basis[:, :kept].double()
            held = float(torch.trace(basis.t() @ covariance @ basis)) / total
            error = float(torch.linalg.matrix_norm(covariance - (sketch.sketch @ sketch.sketch.t()).double(), 2)) / total
            label = f"{k}{' (CoSO)' if k == args.sketch_rank else ''}"
            print(f"{decay:>5} {noise:>6} {label:>10} {kept:>8} {held:>16.4f} {error:>10.4f}", flush=True)


if __name__ == "__main__":
    main()
