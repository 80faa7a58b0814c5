"""``clbench export``: a finished run's final model as a checkpoint transformers or open_clip loads."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

EXPORT_EPILOG = """examples:
  clbench export runs/quickstart/lora/seed-0 --format hf --out exports/smollm2-lora
  clbench export runs/mtil/codyra/seed-0 --format open_clip
  clbench export runs/digits-split/lora/seed-0 --format safetensors

Adapters that are a fixed weight update (lora, olora, inflora, altlora, codyra) are merged into
the weights; routed adapters (mora, smora, flylora) cannot be, so their export is the plain
backbone plus adapters.safetensors (clbench.export.adapters.attach_adapters loads them).
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser("export", help="export a finished run's final model", epilog=EXPORT_EPILOG,
                       description="Write the final model of a finished run as a plain checkpoint (transformers folder, open_clip "
                                   "weights or a safetensors state dict), adapters merged where the method allows.",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="run directory (OUT/BENCHMARK/STRATEGY/seed-N)")
    p.add_argument("--format", required=True, choices=("hf", "open_clip", "safetensors"), help="hf (transformers save_pretrained), open_clip or safetensors")
    p.add_argument("--out", type=Path, help="export folder (default: exports/BENCHMARK/STRATEGY/seed-N-FORMAT beside the runs folder)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.add_argument("--data-root", type=Path, help="dataset folder, when the run's data moved (default: the run's)")
    p.set_defaults(handler=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from clbench.export import export_run

    result = export_run(args.run, args.format, args.out, overwrite=args.overwrite, data_root=args.data_root)
    merged = f"{result.merged_layers} adapted layer(s) merged" if result.merged_layers else "no adapter to merge"
    print(f"exported {args.run} as {result.format} to {result.folder} ({merged})")
    if result.unmerged_layers:
        print(f"not merged: {result.manifest['strategy']}'s {result.unmerged_layers} routed adapter layer(s) depend on the input, so they are in "
              f"{result.folder / 'adapters.safetensors'} beside the plain backbone; load them with clbench.export.adapters.attach_adapters")
    return 0
