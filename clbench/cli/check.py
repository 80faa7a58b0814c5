"""``clbench check``: list every missing dataset and weight file of a benchmark at once."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser("check", help="list every missing dataset and weight file of a benchmark",
                       description="Ask every task's loader and the backbone whether their data and weights are here (nothing is "
                                   "downloaded); print each missing one with how to get it. Exit 0 when all are present, 2 otherwise.",
                       epilog="examples:\n  clbench check mtil --data-root /data\n  clbench check quickstart\n  clbench check my-bench.toml "
                              "--backbone clip:ViT-B-16@openai", formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("benchmark", help="benchmark name or .toml file")
    p.add_argument("--backbone", help="backbone spec to check instead of the benchmark's default")
    p.add_argument("--data-root", type=Path, help="dataset folder (default: $CLBENCH_DATA_ROOT)")
    p.set_defaults(handler=cmd_check)


def cmd_check(args: argparse.Namespace) -> int:
    from clbench.assets import check_benchmark
    from clbench.validation import check_data_root

    present, problems = check_benchmark(args.benchmark, args.backbone, check_data_root(args.data_root))
    for label in present:
        print(f"ok       {label}")
    for problem in problems:
        print(f"MISSING  {problem.what}: {problem.detail}")
    if problems:
        print(f"{len(problems)} of {len(present) + len(problems)} asset(s) missing")
        return 2
    print(f"all present ({len(present)} asset(s))")
    return 0
