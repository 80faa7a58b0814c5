"""The CPU target of the rank-gated LoRA fast path: forward at 2048 tokens, d 768, R 64, k 8 vs the plain layer.

Goal (issue 5): the gated layer's forward within 1.3× of the plain layer on CPU. Measured with
``time.process_time`` on one thread (wall clock on shared small machines is too noisy), median of
``--repeats`` calls, base and gated interleaved so both see the same machine state. Prints the two
medians, the ratio and the per-part costs of the gated forward (z GEMM, top-k, expand) so a
regression can be located. For the full side-by-side table use ``clbench perf``.

Usage::

    python perf/kernels_cpu_target.py
    python perf/kernels_cpu_target.py --repeats 41 --tokens 4096
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch.nn import functional as F

from clbench.kernels import TopKSoftmaxGate, rank_gated_lora


def _cpu_seconds(fn: Callable[[], object]) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--ranks", type=int, default=64)
    parser.add_argument("--trainable", type=int, default=8)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=31)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    m, d, r, t = args.tokens, args.dim, args.ranks, args.trainable
    x, weight, bias = torch.randn(m, d), torch.randn(d, d) / d**0.5, torch.randn(d)
    a_frozen, b_frozen = torch.randn(r - t, d) / d**0.5, torch.randn(d, r - t) * 0.1
    a_train, b_train = torch.randn(t, d) / d**0.5, torch.randn(d, t) * 0.1
    gate = TopKSoftmaxGate(k=args.k, temperature=0.05)

    def base() -> object:
        return F.linear(x, weight, bias)

    def gated() -> object:
        return rank_gated_lora(x, weight, bias, a_frozen, b_frozen, a_train, b_train, gate, backend="cpu")

    a_all = torch.cat([a_frozen, a_train])
    z = x @ a_all.t()
    y = base()
    gz = torch.randn(m, r)
    parts = {"z GEMM": lambda: x @ a_all.t(), "top-k": lambda: z.topk(args.k, dim=1),
             "expand addmm_": lambda: y.addmm_(gz, torch.cat([b_frozen, b_train], dim=1).t())}
    with torch.no_grad():
        for _ in range(3):
            base(), gated()
        base_s, gated_s = [], []
        for _ in range(args.repeats):
            base_s.append(_cpu_seconds(base))
            gated_s.append(_cpu_seconds(gated))
        part_s = {name: statistics.median(_cpu_seconds(fn) for _ in range(args.repeats)) for name, fn in parts.items()}
    b, g = statistics.median(base_s), statistics.median(gated_s)
    print(f"shape: {m} tokens, {d}x{d}, R {r} ({t} trainable), k {args.k}; fp32, 1 thread, median of {args.repeats}")
    for name, seconds in part_s.items():
        print(f"  part {name:<14} {seconds * 1e3:8.3f} ms")
    print(f"plain layer forward  {b * 1e3:8.3f} ms")
    print(f"gated layer forward  {g * 1e3:8.3f} ms")
    print(f"ratio gated / plain  {g / b:8.3f}   (goal <= 1.3: {'met' if g / b <= 1.3 else 'NOT met'})")


if __name__ == "__main__":
    main()
