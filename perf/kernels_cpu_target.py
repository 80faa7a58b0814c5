"""The CPU fast path of the rank-gated op against the plain layer and peft LoRA, and against an earlier revision.

Goal (issue 19): at the shapes of ``clbench perf --shapes small``, the gated layer (MoRA's gate, the
heaviest) within 1.25× of the plain layer, forward and forward+backward, and never slower than
peft LoRA of the same total rank. One process, one thread, ``time.process_time`` (wall clock on a
shared small machine is too noisy), implementations interleaved call by call within each round so
they see the same machine state; each figure is the median of all ``--rounds × --repeats`` samples.
``--baseline-ref main`` also times the CPU path as committed at that git revision (``cpu@main``) in
the same rounds, so the before/after ratio is measured side by side. Prints the load average.

Usage::

    python perf/kernels_cpu_target.py                          # small shapes, base/peft/cpu
    python perf/kernels_cpu_target.py --baseline-ref main      # + the CPU path of main, side by side
    python perf/kernels_cpu_target.py --shapes cpu-target --repeats 31 --parts
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from clbench import perfbench
from clbench.kernels import rank_gated_lora

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baseline import import_from_ref  # noqa: E402

GOAL = 1.25


def baseline_layer(ref: str, p: perfbench.Problem) -> Callable[[torch.Tensor], torch.Tensor]:
    """The CPU fast path of revision ``ref`` on the problem's tensors (its own plan module too)."""
    mods = import_from_ref(ref, {"kernels/cpu.py": "clbench.kernels.cpu", "kernels/plan.py": "clbench.kernels.plan"})
    cpu, plan_mod = mods["clbench.kernels.cpu"], mods["clbench.kernels.plan"]
    ranks = p.a_train.shape[0] + (0 if p.a_frozen is None else p.a_frozen.shape[0])

    def layer(x: torch.Tensor) -> torch.Tensor:
        plan = plan_mod.plan_gate(p.gate, ranks, x.shape[0])
        return cpu.CpuRankGatedLora.apply(plan, 1.0, None, x, p.weight, p.bias, p.a_frozen, p.b_frozen, p.a_train,
                                          p.b_train, None)

    return layer


def current_layer(p: perfbench.Problem) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda x: rank_gated_lora(x, p.weight, p.bias, p.a_frozen, p.b_frozen, p.a_train, p.b_train, p.gate,
                                     backend="cpu")


def measure(shape: perfbench.LayerShape, mode: str, ref: str | None, repeats: int, rounds: int) -> dict[str, float]:
    """Median process seconds per call of each implementation for one shape and mode."""
    p = perfbench.make_problem(shape, torch.device("cpu"), torch.float32)
    train = [p.a_train, p.b_train]
    peft_layer = perfbench._peft_layer(p)
    layers: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], list[torch.Tensor]]] = {
        "base": (lambda x: torch.nn.functional.linear(x, p.weight, p.bias), []),
        "peft": (peft_layer, [q for n, q in peft_layer.named_parameters() if "lora_" in n]),
        "cpu": (current_layer(p), train),
    }
    if ref:
        layers[f"cpu@{ref}"] = (baseline_layer(ref, p), train)
    steps = {name: perfbench.timed_step(layer, params, mode, p) for name, (layer, params) in layers.items()}
    samples: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for _ in range(repeats):
            for name, step in steps.items():
                start = time.process_time()
                step()
                samples[name].append(time.process_time() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default="small", help="a shape set of clbench perf, or comma-separated shape names")
    parser.add_argument("--modes", default="fwd,fwdbwd")
    parser.add_argument("--repeats", type=int, default=11, help="timed calls per implementation per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline-ref", default="", help="git revision whose CPU path is timed beside this one (e.g. main)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    by_name = {s.name: s for group in perfbench.SHAPE_SETS.values() for s in group}
    if args.shapes in perfbench.SHAPE_SETS:
        shapes = perfbench.SHAPE_SETS[args.shapes]
    else:
        unknown = [n for n in args.shapes.split(",") if n not in by_name]
        if unknown:
            raise SystemExit(f"unknown shape {', '.join(unknown)}; choose from {', '.join(by_name)}")
        shapes = [by_name[n] for n in args.shapes.split(",")]
    ref = args.baseline_ref or None
    print(f"torch {torch.__version__}, 1 thread, fp32, MoRA gate (τ 0.05); process-time median of "
          f"{args.rounds}×{args.repeats} interleaved calls; load average at start {os.getloadavg()[0]:.2f}")
    cols = ["peft", "cpu"] + ([f"cpu@{ref}"] if ref else [])
    head = f"{'shape':<11} {'mode':<7} {'base ms':>8} " + " ".join(f"{c + ' ×base':>14}" for c in cols) + f" {'cpu/peft':>9}"
    if ref:
        head += f" {'cpu/cpu@' + ref:>12}"
    print(head + "  goal")
    met_all = True
    for shape in shapes:
        for mode in args.modes.split(","):
            med = measure(shape, mode, ref, args.repeats, args.rounds)
            ratio = {c: med[c] / med["base"] for c in cols}
            met = ratio["cpu"] <= GOAL and med["cpu"] <= med["peft"]
            met_all &= met
            line = (f"{shape.name:<11} {mode:<7} {med['base'] * 1e3:>8.2f} " + " ".join(f"{ratio[c]:>14.3f}" for c in cols)
                    + f" {med['cpu'] / med['peft']:>9.3f}")
            if ref:
                line += f" {med['cpu'] / med[f'cpu@{ref}']:>12.3f}"
            print(line + f"  {'met' if met else 'NOT met'}", flush=True)
    print(f"goal (cpu ≤ {GOAL}× base and ≤ peft on every row): {'met' if met_all else 'NOT met'}; "
          f"load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
