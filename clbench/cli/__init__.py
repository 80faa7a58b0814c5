"""The ``clbench`` command line: a thin layer over the Python API.

Subcommands: ``list``, ``show``, ``run``, ``report``, ``perf``. User mistakes (unknown names, bad options,
missing assets, unreadable results) print one ``clbench: error: ...`` line and exit with status
2; nothing else is printed for them, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from clbench.errors import ClbenchError

EPILOG = """examples:
  clbench list strategies
  clbench show digits-split
  clbench run digits-split -s lora,finetune --seed 0,1
  clbench run quickstart
  clbench run digits-split -s lora -S rank=4 -S merge_after_task=true
  clbench report runs/digits-split --out reports/digits-split
  clbench perf --shapes small --json perf/cpu.json
"""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"clbench: error: {message} (see clbench {self.prog.split()[-1] if ' ' in self.prog else ''} --help)\n".replace("  ", " "))
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    from clbench.cli import listing, perf, report, run

    parser = _Parser(prog="clbench", description="Continual-learning benchmarks for pretrained CLIP and LLM backbones.",
                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"clbench {_version()}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    listing.add_parsers(sub)
    run.add_parser(sub)
    report.add_parser(sub)
    perf.add_parser(sub)
    return parser


def _version() -> str:
    from clbench import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``clbench`` console script; returns the exit status."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s", stream=sys.stderr)
    for noisy in ("transformers", "huggingface_hub", "open_clip", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    try:
        return int(args.handler(args) or 0)
    except ClbenchError as exc:
        sys.stderr.write(f"clbench: error: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("clbench: interrupted; finished tasks are checkpointed, continue with --resume\n")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
