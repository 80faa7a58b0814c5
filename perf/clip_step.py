"""Time one CLIP training step (forward, loss, backward, AdamW step) in fp32 and under bf16 autocast.

The step is the one the runner takes for MoRA/CoDyRA-style training: a frozen CLIP (random
init: no package ships CLIP weights) with LoRA adapters on q, k, v, o, fc and proj of both
encoders, the §1.3 loss (image->text over the task's classes plus text->image) on a batch of
preprocessed 224x224 images, text embeddings of the task's classes recomputed every step.

    python perf/clip_step.py                      # ViT-B-32, batch 32, 10 classes, fp32 and bf16
    python perf/clip_step.py --arch ViT-B-16 --steps 3 --amp bf16
    python perf/clip_step.py --device cuda --arch ViT-B-16 --batch 128 --amp none,bf16 --json clip.json

Prints wall-clock and process-CPU seconds per step (medians of the timed steps, after warm-up). On a shared machine the
numbers vary with the load: report them with the machine and its load average. On CUDA the wall clock is synchronised
before each reading (process time there only measures the launching thread).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from clbench.api.stream import ExampleListDataset, Experience, Stream
from clbench.backbones.clip import build_clip
from clbench.nn import apply_lora
from clbench.training import autocast


def build(arch: str, classes: int, rank: int) -> tuple[object, list[torch.nn.Parameter]]:
    backbone = build_clip(f"clip:{arch}")
    empty = ExampleListDataset([])
    exp = Experience(index=0, name="task", train=empty, test=empty, class_ids=tuple(range(classes)), templates=("a photo of a {}.",))
    backbone.bind(Stream(protocol="task-incremental", experiences=(exp,), class_names=tuple(f"class {i}" for i in range(classes))))
    backbone.model.requires_grad_(False)
    layers = backbone.adapter_targets(["q", "k", "v", "o", "fc", "proj"])
    apply_lora(backbone.model, layers, rank=rank, alpha=float(rank))
    backbone.model.train()
    params = [p for p in backbone.model.parameters() if p.requires_grad]
    return backbone, params


def time_steps(backbone: object, params: list[torch.nn.Parameter], batch: dict, amp: str, warmup: int, steps: int,
               device: torch.device) -> tuple[list[float], list[float]]:
    """Wall-clock and process CPU seconds of each timed step (CPU time is less sensitive to a busy machine)."""
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    wall, cpu = [], []

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for i in range(warmup + steps):
        sync()
        start, start_cpu = time.perf_counter(), time.process_time()
        with autocast(device, amp):
            loss = backbone.loss(batch)  # type: ignore[attr-defined]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync()
        if i >= warmup:
            wall.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="ViT-B-32")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--amp", default="none,bf16", help="comma-separated: none, bf16 (fp16 on CUDA)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--json", default="", help="also write the medians to this file")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible here")
    torch.manual_seed(0)
    backbone, params = build(args.arch, args.classes, args.rank)
    backbone.to(device)  # type: ignore[attr-defined]
    size = backbone.model.visual.image_size  # type: ignore[attr-defined]
    size = size[0] if isinstance(size, tuple) else size
    batch = {"image": torch.randn(args.batch, 3, size, size, device=device), "y": (torch.arange(args.batch) % args.classes).to(device),
             "task_id": torch.zeros(args.batch, dtype=torch.long, device=device), "tasks": (0,)}
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpus {os.cpu_count()}"
    print(f"{args.arch} random init, LoRA r={args.rank} on q,k,v,o,fc,proj of both encoders ({len(params)} tensors, "
          f"{sum(p.numel() for p in params):,} trainable params), batch {args.batch}, {args.classes} classes")
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {where}, load average {os.getloadavg()[0]:.1f}")
    rows = []
    for amp in args.amp.split(","):
        wall, cpu = time_steps(backbone, params, batch, amp.strip(), args.warmup, args.steps, device)
        rows.append({"amp": amp.strip(), "wall_ms_median": round(1e3 * statistics.median(wall), 2), "wall_ms_min": round(1e3 * min(wall), 2),
                     "cpu_ms_median": round(1e3 * statistics.median(cpu), 2), "steps": len(wall)})
        print(f"amp={amp:<5} wall s/step median {statistics.median(wall):.3f} (min {min(wall):.3f}, max {max(wall):.3f}); "
              f"CPU s/step median {statistics.median(cpu):.3f} over {torch.get_num_threads()} threads ({len(wall)} steps, load {os.getloadavg()[0]:.1f})")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"arch": args.arch, "batch": args.batch, "rank": args.rank, "device": where,
                                               "torch": torch.__version__, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
