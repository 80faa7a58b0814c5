"""``clbench report``: figures and a Markdown summary from finished runs' results files."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser("report", help="build forgetting-curve reports from results files",
                       description="Read results.json files (or run directories, or folders holding them) and write "
                                   "forgetting curves, accuracy-matrix heat maps, tables with 95% bootstrap intervals, telemetry plots, "
                                   "report.md and a self-contained report.html per benchmark. Reads results files and their "
                                   "per-example scores only (no torch).",
                       epilog="examples:\n  clbench report runs/digits-split --out reports\n  clbench report runs/quickstart/lora/seed-0\n"
                              "  clbench report runs/quickstart --compare lora",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", type=Path, help="results.json files, run directories or folders to search")
    p.add_argument("--out", type=Path, default=Path("reports"), help="output folder (default: reports); one subfolder per benchmark")
    p.add_argument("--format", default="md,html", help="comma-separated report formats: md, html (default: both)")
    p.add_argument("--compare", metavar="STRATEGY", help="compare every strategy with this one (paired bootstrap; marks significant differences)")
    p.set_defaults(handler=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from clbench.report import build_report

    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    for path in build_report(args.inputs, args.out, formats, compare=args.compare):
        print(path)
    return 0
