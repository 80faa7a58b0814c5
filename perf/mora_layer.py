"""MoRA layer forward + backward time against plain LoRA of the same total rank.

Shapes default to CLIP ViT-B/16 sizes at the end of a 10-task stream (MoRAM's X-TAIL runner settings):
2048 tokens, d_in = d_out = 768, R = 160 atoms (144 frozen + 16 trainable), k = 16, τ = 0.01.
The LoRA baseline is :class:`clbench.nn.LoRALinear` with rank R, every rank trainable (what a
dense adapter of the same size costs). Times are medians over repeats of one training step's
layer work: forward, backward of a fixed random cotangent, gradient reset.

Usage::

    python perf/mora_layer.py                       # CPU, every backend the dispatch has
    python perf/mora_layer.py --tokens 4096 --threads 1
    python perf/mora_layer.py --device cuda --dtype bfloat16 --backends triton,reference

Prints one line per backend with the MoRA/LoRA ratio, plus the base linear layer for scale. On the
CPU the default clock is the process's CPU time (all threads), so a machine shared with other jobs
does not distort the ratios; ``--clock wall`` gives elapsed time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from clbench.nn import LoRALinear
from clbench.strategies.mora.layer import MoRALinear, MoRASettings


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_step(layer: nn.Module, x: torch.Tensor, cotangent: torch.Tensor) -> Callable[[], None]:
    """One training step's layer work: forward, backward of ``cotangent``, gradients dropped."""
    params = [p for p in layer.parameters() if p.requires_grad]

    def step() -> None:
        layer(x).backward(cotangent)
        x.grad = None
        for p in params:
            p.grad = None

    return step


def time_round_robin(steps: dict[str, tuple[Callable[[], None], str]], repeats: int, warmup: int, device: torch.device,
                     clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Median seconds per step of each variant, timed in turn within every repeat.

    Round-robin timing keeps a shared, fluctuating machine load from favouring whichever
    variant happened to run in a quiet moment. Each variant is ``(step, CLBENCH_KERNELS value)``.
    ``clock`` is wall time by default; ``time.process_time`` counts the CPU time of every thread
    of this process, which a busy shared machine does not inflate.
    """
    times: dict[str, list[float]] = {name: [] for name in steps}
    for i in range(warmup + repeats):
        for name, (step, backend) in steps.items():
            os.environ["CLBENCH_KERNELS"] = backend
            _sync(device)
            start = clock()
            step()
            _sync(device)
            if i >= warmup:
                times[name].append(clock() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def build_mora(base: nn.Linear, rank: int, total: int, topk: int) -> MoRALinear:
    """A MoRA layer whose bank holds ``total - rank`` trained-looking frozen atoms."""
    layer = MoRALinear(base, MoRASettings(rank=rank, topk=topk, temperature=0.01, threshold=0.2, alpha=float(rank)))
    for _ in range(total // rank - 1):
        with torch.no_grad():
            layer.lora_B.normal_(std=0.02)
        layer.freeze_current_()
    with torch.no_grad():
        layer.lora_B.normal_(std=0.02)
    return layer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--total-rank", type=int, default=160, help="R: atoms in the bank (frozen + trainable)")
    parser.add_argument("--rank", type=int, default=16, help="trainable atoms (r)")
    parser.add_argument("--topk", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--backends", default="reference,cpu", help="comma list for CLBENCH_KERNELS")
    parser.add_argument("--clock", choices=("wall", "cpu"), default=None,
                        help="wall time or process CPU time (default: cpu on the CPU, where other jobs inflate wall time; wall on CUDA)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    base = nn.Linear(args.dim, args.dim).to(device, dtype)
    x = torch.randn(args.tokens, args.dim, device=device, dtype=dtype, requires_grad=True)
    cotangent = torch.randn(args.tokens, args.dim, device=device, dtype=dtype)

    print(f"device={device} dtype={args.dtype} threads={torch.get_num_threads()} tokens={args.tokens} d={args.dim} "
          f"R={args.total_rank} (trainable {args.rank}) k={args.topk} repeats={args.repeats} (median, round-robin)")
    frozen = nn.Linear(args.dim, args.dim).to(device, dtype)
    frozen.load_state_dict(base.state_dict())
    frozen.requires_grad_(False)
    lora = LoRALinear(base, rank=args.total_rank, alpha=float(args.total_rank)).to(device, dtype).train()
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    steps = {"base": (make_step(frozen, x, cotangent), "auto"), "lora": (make_step(lora, x, cotangent), "auto")}
    for backend in backends:
        mora = build_mora(base, args.rank, args.total_rank, args.topk).to(device, dtype).train()
        steps[f"mora-{backend}"] = (make_step(mora, x, cotangent), backend)
    clock_name = args.clock or ("cpu" if device.type == "cpu" else "wall")
    clock = time.process_time if clock_name == "cpu" else time.perf_counter
    print(f"clock: {clock_name} time")
    result = time_round_robin(steps, args.repeats, args.warmup, device, clock)
    base_time, lora_time = result["base"], result["lora"]
    print(f"base linear (frozen, dx only)      {base_time * 1e3:8.2f} ms")
    print(f"LoRA rank {args.total_rank:<4d} (all trainable)   {lora_time * 1e3:8.2f} ms   {lora_time / base_time:5.2f}x base")
    for backend in backends:
        mora_time = result[f"mora-{backend}"]
        print(f"MoRA R={args.total_rank} k={args.topk} [{backend:9s}]    {mora_time * 1e3:8.2f} ms   {mora_time / base_time:5.2f}x base   "
              f"MoRA/LoRA = {mora_time / lora_time:.2f}")


if __name__ == "__main__":
    main()
