"""``clbench perf``: time the rank-gated LoRA implementations side by side (see :mod:`clbench.perfbench`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from clbench.errors import UsageError

EXAMPLES = """examples:
  clbench perf                              # small CPU shapes (or every shape on a GPU)
  clbench perf --device cuda --shapes all --json perf/h100.json
  clbench perf --shapes small --impl base,eager,cpu --mode fwd --repeats 21
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser("perf", help="benchmark the rank-gated LoRA kernels against base, eager, peft and torch.compile",
                       description="Time the base layer, the eager mask-multiply reference, peft LoRA of the same "
                                   "rank, torch.compile of the reference, the CPU fast path and (on CUDA) the Triton "
                                   "kernels, forward and forward+backward, and print ms/call, GB/s and the fraction "
                                   "of the physical floor.",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu or cuda (default: auto)")
    p.add_argument("--shapes", default="default",
                   help="tiny (harness smoke test), small, clip, llama or all (default: small on CPU, all on CUDA)")
    p.add_argument("--impl", default=None, help="comma-separated subset of base,eager,peft,compiled,cpu,triton,"
                                                "triton-noskip (default: all that apply to the device)")
    p.add_argument("--mode", default="fwd,fwdbwd", help="fwd, fwdbwd or both comma-separated (default: both)")
    p.add_argument("--repeats", type=int, default=11, help="timed calls per measurement (CPU median; default 11)")
    p.add_argument("--rounds", type=int, default=2, help="interleaved timing rounds; their range is the noise (default 2)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls before timing on CPU (default 2)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (default 1: process time is per thread)")
    p.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    p.set_defaults(handler=cmd_perf)


def _split(value: str, allowed: tuple[str, ...], what: str) -> list[str]:
    items = [item.strip() for item in value.split(",") if item.strip()]
    unknown = [item for item in items if item not in allowed]
    if unknown or not items:
        raise UsageError(f"unknown {what} {', '.join(unknown) or repr(value)}; choose from {', '.join(allowed)}")
    return items


def cmd_perf(args: argparse.Namespace) -> int:
    import torch

    from clbench import perfbench

    if args.device not in ("auto", "cpu", "cuda"):
        raise UsageError(f"--device must be auto, cpu or cuda, got {args.device!r}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is visible here; use --device cpu")
    if args.repeats < 1 or args.rounds < 1 or args.warmup < 0 or args.threads < 1:
        raise UsageError("--repeats, --rounds and --threads must be >= 1 and --warmup >= 0")
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    shapes = perfbench.shapes_for(args.shapes, device)
    default_impls = [i for i in perfbench.IMPLEMENTATIONS if device.type == "cuda" or i not in perfbench.CUDA_ONLY]
    impls = default_impls if args.impl is None else _split(args.impl, perfbench.IMPLEMENTATIONS, "implementation")
    if any(i in perfbench.CUDA_ONLY for i in impls) and device.type != "cuda":
        raise UsageError("--impl triton needs --device cuda (the interpreter is for tests, not timing)")
    modes = _split(args.mode, perfbench.MODES, "mode")
    if "base" not in impls:
        impls = ["base", *impls]  # every ratio is against the base layer timed in the same run
    results = perfbench.run_benchmark(device, shapes, impls, modes, repeats=args.repeats, warmup=args.warmup,
                                      threads=args.threads, rounds=args.rounds)
    if args.json is not None:
        perfbench.write_json(results, args.json)
    print(perfbench.format_table(results))
    if args.json is not None:
        print(f"wrote {args.json}")
    return 0
