"""CoSO's cost against AdamW at ViT widths: the optimizer step, its projector refresh, and a whole training step.

Three parts (``--parts``), each timing its contenders interleaved call by call so machine noise
hits all alike; figures are medians. CPU: ``time.process_time`` on ``--threads`` (default 1)
torch threads. CUDA (``--device cuda``): wall clock with synchronisation.

* ``optimizer``: one weight (768×768: ``attn.proj``; 3072×768: ``mlp.fc1``, m = d_out = 3072), each
  preset (ImageNet-R: r = 50, ℓ = 120; CIFAR-100: r = 15, ℓ = 100; T_gap = 1, so every step
  refreshes), empty history (task 1) and a ``--history``-column one (a later task, so the
  deflation runs too). ``torch.optim.AdamW`` on the same weight and gradients against CoSO with
  the full SVD and the randomized one. ``refresh`` is the randomized step minus a step that only
  projects (T_gap = ∞): the projector refresh and sketch merge alone.
* ``floor``: the pieces of one warm randomized refresh (the products ``G Ω`` and ``Qᵀ G``, the
  range finder with its small SVD, the sketch merge, and the range finder at q = r + p as if only
  the projector were needed), each against an AdamW step: what a faithful refresh cannot avoid.
* ``layers``: the 12 ``attn.proj`` weights of a ViT-B (``--with-fc`` adds the 12 ``mlp.fc1``) in one
  CoSO group (the randomized refresh batches layers of one shape) against AdamW on the same 12.
* ``train``: a whole training step (forward, loss, backward, optimizer step, zero_grad) on a tiny
  ViT (the ``vit:tiny`` architecture on 8×8 digits-sized inputs, batch 32, generic preset r = 8,
  ℓ = 16) and on a randomly initialised ViT-B/16 at 224 px (batch ``--vitb-batch``, ImageNet-R
  preset): AdamW on LoRA (rank 8, α 16, as ``-s lora``) of the layers CoSO trains, against CoSO
  (full and randomized) on them; the task head trains in both. With ``--vitb-targets o,fc``
  CoSO also trains ``mlp.fc1``.

``--baseline-ref main`` adds the CoSO optimizer as committed at that git revision (its projector
and sketch modules too), timed in the same rounds, so before/after ratios are side by side.

Usage::

    python perf/coso_step.py                                   # every part, CPU, one thread
    python perf/coso_step.py --parts optimizer --baseline-ref main
    python perf/coso_step.py --parts floor --shapes 768x768 --presets imagenet-r
    python perf/coso_step.py --parts train --vitb-batch 4 --json coso.json
    python perf/coso_step.py --device cuda --vitb-batch 64     # on a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from clbench.nn import apply_lora
from clbench.strategies.coso.config import PRESETS
from clbench.strategies.coso.optimizer import CoSOAdamW

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baseline import import_from_ref  # noqa: E402

TINY = {"embed_dim": 64, "depth": 2, "num_heads": 4, "mlp_ratio": 2.0}  # clbench.backbones.vit.TINY
COSO_MODULES = {f"strategies/coso/{name}.py": f"clbench.strategies.coso.{name}" for name in ("optimizer", "projector", "frequent_directions")}


class Clock:
    """Process CPU time on the CPU; synchronised wall clock on CUDA."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def __call__(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return time.perf_counter()
        return time.process_time()


def interleaved(steps: dict[str, Callable[[], None]], clock: Clock, reps: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds per call of each step, the steps called in turn ``reps`` times after ``warmup`` calls each."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    samples: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(reps):
        for name, step in steps.items():
            start = clock()
            step()
            samples[name].append(clock() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


def coso_group(params: list[nn.Parameter], preset: str, svd: str, gap: int | None = None) -> dict[str, Any]:
    cfg = PRESETS[preset]
    return {"params": params, "coso": True, "proj_rank": cfg.proj_rank, "sketch_rank": cfg.sketch_rank,
            "update_gap": gap or cfg.update_gap, "svd": svd}


# ---- part 1: one weight --------------------------------------------------------------------------
def optimizer_rows(args: argparse.Namespace, device: torch.device, before: Any) -> list[dict[str, Any]]:
    clock, rows = Clock(device), []
    gen = torch.Generator().manual_seed(0)
    for m, n in (tuple(int(v) for v in shape.split("x")) for shape in args.shapes.split(",")):
        grads = [(torch.randn(m, n, generator=gen) * 1e-3).to(device) for _ in range(args.steps)]
        for preset in args.presets.split(","):
            for history_cols in (0, args.history):
                history = torch.linalg.qr(torch.randn(m, history_cols, generator=gen))[0].to(device) if history_cols else None
                contenders: dict[str, Callable[[list[nn.Parameter]], torch.optim.Optimizer]] = {
                    "adamw": lambda w: torch.optim.AdamW(w, lr=1e-4, eps=1e-6),
                    "full": lambda w: CoSOAdamW([coso_group(w, preset, "full")], lr=1e-4),
                    "randomized": lambda w: CoSOAdamW([coso_group(w, preset, "randomized")], lr=1e-4),
                    "project_only": lambda w: CoSOAdamW([coso_group(w, preset, "randomized", gap=10**9)], lr=1e-4),
                }
                if before is not None:
                    contenders["before_full"] = lambda w: before.CoSOAdamW([coso_group(w, preset, "full")], lr=1e-4)
                    contenders["before_randomized"] = lambda w: before.CoSOAdamW([coso_group(w, preset, "randomized")], lr=1e-4)
                steps = {}
                for name, make in contenders.items():
                    weight = nn.Parameter((torch.randn(m, n, generator=gen) * 0.02).to(device))
                    opt = make([weight])
                    if history is not None and hasattr(opt, "set_history"):
                        opt.set_history(weight, history)
                    steps[name] = _stepper(opt, weight, grads)
                med = interleaved(steps, clock, reps=args.reps * args.steps, warmup=2)
                row = {"shape": f"{m}x{n}", "preset": preset, "history": history_cols,
                       **{f"{k}_ms": round(v * 1e3, 3) for k, v in med.items()}}
                row["refresh_ms"] = round((med["randomized"] - med["project_only"]) * 1e3, 3)
                row["full_over_adamw"] = round(med["full"] / med["adamw"], 2)
                row["randomized_over_adamw"] = round(med["randomized"] / med["adamw"], 2)
                row["refresh_over_adamw"] = round((med["randomized"] - med["project_only"]) / med["adamw"], 2)
                if before is not None:
                    row["randomized_before_over_after"] = round(med["before_randomized"] / med["randomized"], 2)
                    row["full_before_over_after"] = round(med["before_full"] / med["full"], 2)
                rows.append(row)
                extra = (f" {row['before_randomized_ms']:>9.2f} {row['randomized_before_over_after']:>8.2f}"
                         if before is not None else "")
                print(f"{row['shape']:>9} {preset:>10} {history_cols:>4} {row['adamw_ms']:>8.2f} {row['full_ms']:>8.2f} "
                      f"{row['randomized_ms']:>8.2f} {row['refresh_ms']:>8.2f} {row['full_over_adamw']:>9.1f} "
                      f"{row['randomized_over_adamw']:>9.1f} {row['refresh_over_adamw']:>9.1f}{extra}", flush=True)
    return rows


def _stepper(opt: torch.optim.Optimizer, weight: nn.Parameter, grads: list[torch.Tensor]) -> Callable[[], None]:
    """One optimizer step per call, cycling through the gradients."""
    position = [0]

    def step() -> None:
        weight.grad = grads[position[0] % len(grads)]
        position[0] += 1
        opt.step()

    return step


# ---- part 1b: what a faithful refresh cannot avoid -------------------------------------------------
def floor_rows(args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    """The pieces of one warm randomized refresh, each timed against an AdamW step in the same rounds.

    CoSO's sketch needs ℓ + 1 singular values of every refreshed gradient, so the range finder
    takes q = ℓ + 1 + p columns (131 at the ImageNet-R preset); the two products ``G Ω`` and
    ``Qᵀ G`` alone are the least any range-finder refresh of that width costs. ``rsvd(r)`` is the
    same range finder at q = r + p, what the refresh would cost if only the projector were needed.
    """
    from clbench.strategies.coso.frequent_directions import merge_batch, shrink
    from clbench.strategies.coso.projector import randomized_svd

    clock, rows = Clock(device), []
    gen = torch.Generator().manual_seed(2)
    for m, n in (tuple(int(v) for v in shape.split("x")) for shape in args.shapes.split(",")):
        for preset in args.presets.split(","):
            cfg = PRESETS[preset]
            wanted = max(cfg.proj_rank, cfg.sketch_rank + 1)
            q = min(wanted + 10, m, n)
            grad = (torch.randn(1, m, n, generator=gen) * 1e-3).to(device)
            warm = randomized_svd(grad, wanted, 10, 2, None, torch.Generator(device=device).manual_seed(0))
            small = randomized_svd(grad, cfg.proj_rank, 10, 2, None, torch.Generator(device=device).manual_seed(0))
            omega, q_basis = warm.next_test.contiguous(), warm.u.contiguous()
            block_sigma, _ = shrink(warm.sigma[:, : cfg.sketch_rank + 1], cfg.sketch_rank)
            block_u = warm.u[:, :, : block_sigma.shape[-1]]
            width = min(cfg.sketch_rank, m - block_u.shape[-1])  # the batched merge needs a + b <= m
            sketch_u = torch.linalg.qr(torch.randn(1, m, width, generator=gen).to(device)).Q
            sketch_sigma = torch.rand(1, width, generator=gen).sort(descending=True).values.to(device)
            weight = nn.Parameter((torch.randn(m, n, generator=gen) * 0.02).to(device))
            adamw = torch.optim.AdamW([weight], lr=1e-4, eps=1e-6)
            weight.grad = grad[0].clone()
            steps: dict[str, Callable[[], Any]] = {
                "adamw": adamw.step,
                "products": lambda: (grad @ omega, q_basis.transpose(1, 2) @ grad),
                "rsvd": lambda: randomized_svd(grad, wanted, 10, 0, warm.next_test),
                "merge": lambda: merge_batch(sketch_u, sketch_sigma, block_u, block_sigma, 1.0, cfg.sketch_rank),
                "rsvd_r": lambda: randomized_svd(grad, cfg.proj_rank, 10, 0, small.next_test),
            }
            med = interleaved(steps, clock, reps=args.reps * 10, warmup=2)
            row = {"shape": f"{m}x{n}", "preset": preset, "q": q, "sketch_width": width, "q_projector_only": min(cfg.proj_rank + 10, m, n),
                   **{f"{k}_ms": round(v * 1e3, 3) for k, v in med.items()},
                   **{f"{k}_over_adamw": round(v / med["adamw"], 2) for k, v in med.items() if k != "adamw"},
                   "rsvd_plus_merge_over_adamw": round((med["rsvd"] + med["merge"]) / med["adamw"], 2)}
            rows.append(row)
            print(f"{row['shape']:>9} {preset:>10} {q:>4} {med['adamw'] * 1e3:>7.2f} "
                  + " ".join(f"{med[k] * 1e3:>7.2f} ({row[k + '_over_adamw']:>4.1f}x)" for k in ("products", "rsvd", "merge", "rsvd_r"))
                  + f" {row['rsvd_plus_merge_over_adamw']:>9.1f}", flush=True)
    return rows


# ---- part 2: the 12 layers of a ViT-B in one group ---------------------------------------------
def layer_rows(args: argparse.Namespace, device: torch.device, before: Any) -> list[dict[str, Any]]:
    shapes = [(768, 768)] * 12 + ([(3072, 768)] * 12 if args.with_fc else [])
    gen = torch.Generator().manual_seed(1)
    grads = [[(torch.randn(m, n, generator=gen) * 1e-3).to(device) for m, n in shapes] for _ in range(2)]
    contenders: dict[str, Callable[[list[nn.Parameter]], torch.optim.Optimizer]] = {
        "adamw": lambda w: torch.optim.AdamW(w, lr=1e-4, eps=1e-6),
        "full": lambda w: CoSOAdamW([coso_group(w, "imagenet-r", "full")], lr=1e-4),
        "randomized": lambda w: CoSOAdamW([coso_group(w, "imagenet-r", "randomized")], lr=1e-4),
    }
    if before is not None:
        contenders["before_randomized"] = lambda w: before.CoSOAdamW([coso_group(w, "imagenet-r", "randomized")], lr=1e-4)
    steps = {}
    for name, make in contenders.items():
        weights = [nn.Parameter((torch.randn(m, n, generator=gen) * 0.02).to(device)) for m, n in shapes]
        opt = make(weights)
        position = [0]

        def step(opt: torch.optim.Optimizer = opt, weights: list[nn.Parameter] = weights, position: list[int] = position) -> None:
            for w, g in zip(weights, grads[position[0] % 2]):
                w.grad = g
            position[0] += 1
            opt.step()

        steps[name] = step
    med = interleaved(steps, Clock(device), reps=args.reps, warmup=2)
    row = {"layers": f"12x768x768{' + 12x3072x768' if args.with_fc else ''}", **{f"{k}_ms": round(v * 1e3, 2) for k, v in med.items()},
           "full_over_adamw": round(med["full"] / med["adamw"], 2), "randomized_over_adamw": round(med["randomized"] / med["adamw"], 2)}
    if before is not None:
        row["randomized_before_over_after"] = round(med["before_randomized"] / med["randomized"], 2)
    print(json.dumps(row))
    return [row]


# ---- part 3: whole training steps ----------------------------------------------------------------
def vit(kind: str, device: torch.device) -> tuple[nn.Module, torch.Tensor, torch.Tensor, str]:
    """A randomly initialised model, one input batch and labels; the CoSO preset for it."""
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    if kind == "tiny":
        model = VisionTransformer(img_size=8, patch_size=2, in_chans=1, num_classes=10, **TINY)  # type: ignore[arg-type]
        x = torch.rand(32, 1, 8, 8)
        preset = "generic"
    else:
        model = VisionTransformer(img_size=224, patch_size=16, num_classes=10, embed_dim=768, depth=12, num_heads=12)
        x = torch.rand(kind_batch(kind), 3, 224, 224)
        preset = "imagenet-r"
    return model.to(device), x.to(device), torch.arange(x.shape[0], device=device) % 10, preset


def kind_batch(kind: str) -> int:
    return int(kind.split(":")[1])


def target_layers(model: nn.Module, targets: str) -> dict[str, nn.Linear]:
    suffix = {"o": "attn.proj", "fc": "mlp.fc1"}
    wanted = tuple(suffix[t] for t in targets.split(","))
    return {name: mod for name, mod in model.named_modules() if isinstance(mod, nn.Linear) and name.endswith(wanted)}


def training_step(kind: str, method: str, targets: str, device: torch.device, optimizer_module: Any = None) -> Callable[[], None]:
    """One training step of ``method`` (``lora``, ``full``, ``randomized``) on a fresh model."""
    model, x, y, preset = vit(kind, device)
    model.requires_grad_(False)
    head = list(model.head.parameters())
    for p in head:
        p.requires_grad_(True)
    layers = target_layers(model, targets)
    if method == "lora":
        adapters = apply_lora(model, layers, rank=8, alpha=16.0)
        train = [p for a in adapters.values() for p in a.parameters() if p.requires_grad]
        optimizer: torch.optim.Optimizer = torch.optim.AdamW(train + head, lr=1e-4)
    else:
        weights = [layer.weight.requires_grad_(True) for layer in layers.values()]
        module = optimizer_module or sys.modules[CoSOAdamW.__module__]
        optimizer = module.CoSOAdamW([coso_group(weights, preset, method), {"params": head, "coso": False}], lr=1e-4)
    model.train()

    def step() -> None:
        loss = F.cross_entropy(model(x) / 3.0, y)  # CoSO's temperature; the same loss for both
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def train_rows(args: argparse.Namespace, device: torch.device, before: Any) -> list[dict[str, Any]]:
    rows = []
    for kind, targets in (("tiny", "o"), (f"vit-b:{args.vitb_batch}", args.vitb_targets)):
        if kind.startswith("vit-b") and args.vitb_batch <= 0:
            continue
        steps = {method: training_step(kind, method, targets, device) for method in args.train_methods.split(",")}
        if before is not None:
            steps["before_randomized"] = training_step(kind, "randomized", targets, device, before)
        reps = args.reps * (4 if kind == "tiny" else 1)
        med = interleaved(steps, Clock(device), reps=reps, warmup=2)
        row = {"model": "vit:tiny (64 wide, 2 blocks), batch 32, 8x8" if kind == "tiny" else f"ViT-B/16 random init, batch {args.vitb_batch}, 224 px",
               "targets": targets, **{f"{k}_ms": round(v * 1e3, 2) for k, v in med.items()},
               **{f"{m}_over_lora": round(med[m] / med["lora"], 3) for m in ("full", "randomized") if m in med}}
        if before is not None:
            row["randomized_before_over_after"] = round(med["before_randomized"] / med["randomized"], 3)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="optimizer,layers,train", help="comma list of optimizer, floor, layers, train")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--shapes", default="768x768,3072x768", help="comma list of m x n weights for the optimizer part")
    parser.add_argument("--steps", type=int, default=3, help="distinct gradients cycled through (optimizer part)")
    parser.add_argument("--reps", type=int, default=3, help="timed rounds (median reported)")
    parser.add_argument("--threads", type=int, default=1, help="CPU torch threads (default 1: process time is per thread)")
    parser.add_argument("--history", type=int, default=200, help="columns of the historical basis in the later-task rows")
    parser.add_argument("--presets", default="imagenet-r,cifar100", help="comma list of presets (ranks) for the optimizer part")
    parser.add_argument("--with-fc", action="store_true", help="layers part: add the 12 mlp.fc1 (3072x768) weights")
    parser.add_argument("--vitb-batch", type=int, default=2, help="images per ViT-B training step (0 skips the ViT-B)")
    parser.add_argument("--vitb-targets", default="o", help="layers CoSO trains in the ViT-B step: o or o,fc")
    parser.add_argument("--train-methods", default="lora,full,randomized", help="training part: lora (the reference, required), full, randomized")
    parser.add_argument("--baseline-ref", default="", help="also time the CoSO optimizer of this git revision (e.g. main)")
    parser.add_argument("--json", default="", help="also write the results to this file")
    args = parser.parse_args()
    if "lora" not in args.train_methods.split(","):
        raise SystemExit("--train-methods must include lora (every ratio is against it)")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible here")
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    before = import_from_ref(args.baseline_ref, COSO_MODULES)[COSO_MODULES["strategies/coso/optimizer.py"]] if args.baseline_ref else None
    clock_name = "wall clock, synchronised" if device.type == "cuda" else f"process time, {torch.get_num_threads()} thread(s)"
    print(f"torch {torch.__version__}, {device}, {clock_name}; load average {os.getloadavg()[0]:.2f}")
    results: dict[str, Any] = {"torch": torch.__version__, "device": str(device), "clock": clock_name,
                               "load_average_start": os.getloadavg()[0], "baseline_ref": args.baseline_ref or None}
    parts = args.parts.split(",")
    if "optimizer" in parts:
        print("optimizer step, ms (median); refresh = randomized step − projection-only step")
        head = f"{'shape':>9} {'preset':>10} {'hist':>4} {'AdamW':>8} {'full':>8} {'rand':>8} {'refresh':>8} {'full/AdamW':>9} {'rand/AdamW':>9} {'refr/AdamW':>9}"
        print(head + (f" {'rand@' + args.baseline_ref:>9} {'before/after':>8}" if before is not None else ""))
        results["optimizer"] = optimizer_rows(args, device, before)
    if "floor" in parts:
        print("pieces of one warm randomized refresh, ms (x AdamW step); products = G Ω and Qᵀ G at q columns; "
              "rsvd = range finder + small SVD; merge = sketch merge; rsvd_r = range finder at q = r + p (projector only)")
        print(f"{'shape':>9} {'preset':>10} {'q':>4} {'AdamW':>7} {'products':>15} {'rsvd':>15} {'merge':>15} {'rsvd_r':>15} {'rsvd+merge':>9}")
        results["floor"] = floor_rows(args, device)
    if "layers" in parts:
        print("12 ViT-B layers in one CoSO group (ImageNet-R preset), ms per optimizer step")
        results["layers"] = layer_rows(args, device, before)
    if "train" in parts:
        print("whole training step (forward, loss, backward, optimizer, zero_grad), ms; AdamW-LoRA r=8 vs CoSO")
        results["train"] = train_rows(args, device, before)
    results["load_average_end"] = os.getloadavg()[0]
    print(f"load average at end {results['load_average_end']:.2f}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
