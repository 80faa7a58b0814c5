"""The ``clbench`` command line: a thin layer over the Python API.

Subcommands: ``list``, ``show``, ``run``, ``sweep``, ``report``, ``perf``, ``export``, ``eval``, ``check``. User mistakes (unknown names, bad options,
missing assets, unreadable results) print one ``clbench: error: ...`` line and exit with status
2; nothing else is printed for them, never a traceback. Other exit statuses: 1 for a run that
stopped (full disk, I/O error, non-finite loss), 3 when another process holds the run directory,
130 for Ctrl-C and 143 for SIGTERM (handled alike: the run says what it kept). A failure clbench
did not foresee still prints one line (``-v`` shows the traceback).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from types import FrameType

from clbench.errors import ClbenchError, Terminated

EPILOG = """examples:
  clbench list strategies
  clbench show digits-split
  clbench run digits-split -s lora,finetune --seed 0,1
  clbench run quickstart
  clbench run digits-split -s lora -S rank=4 -S merge_after_task=true
  clbench sweep digits-split -s lora,finetune --seed 0,1 -S lr=1e-3,1e-2 --executor ray
  clbench report runs/digits-split --out reports/digits-split
  clbench perf --shapes small --json perf/cpu.json
  clbench export runs/quickstart/lora/seed-0 --format hf
  clbench eval runs/quickstart/lora/seed-0 --benchmark trace
  clbench check mtil
"""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors and exit status 2, and help wrapped at spaces only."""

    def _get_formatter(self) -> argparse.HelpFormatter:
        from clbench.cli.text import HelpFormatter

        return HelpFormatter(prog=self.prog)

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"clbench: error: {message} (see clbench {self.prog.split()[-1] if ' ' in self.prog else ''} --help)\n".replace("  ", " "))
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    from clbench.cli import check, evaluate, export, listing, perf, report, run, sweep

    parser = _Parser(prog="clbench", description="Continual-learning benchmarks for pretrained CLIP and LLM backbones.",
                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"clbench {_version()}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    listing.add_parsers(sub)
    run.add_parser(sub)
    sweep.add_parser(sub)
    report.add_parser(sub)
    perf.add_parser(sub)
    export.add_parser(sub)
    evaluate.add_parser(sub)
    check.add_parser(sub)
    return parser


def _version() -> str:
    from clbench import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``clbench`` console script; returns the exit status."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = [str(a) for a in (sys.argv[1:] if argv is None else argv)]  # what `clbench run --nproc N` hands on to torchrun
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s", stream=sys.stderr)
    for noisy in ("transformers", "huggingface_hub", "open_clip", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    try:
        with _signals_as_interrupts():
            return int(args.handler(args) or 0)
    except ClbenchError as exc:
        sys.stderr.write(f"clbench: error: {_one_line(exc)}\n")
        return exc.exit_code
    except KeyboardInterrupt as exc:
        what = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        detail = str(exc.args[0]) if exc.args else "stopped"
        sys.stderr.write(f"clbench: {what}; {detail}\n")
        return 143 if isinstance(exc, Terminated) else 130
    except OSError as exc:  # a file-system failure outside clbench's own writers (e.g. in a library)
        from clbench.safeio import describe

        if args.verbose:
            raise
        where = f" {exc.filename}" if exc.filename else ""
        sys.stderr.write(f"clbench: error: file system error{where}: {describe(exc)}\n")
        return 1
    except Exception as exc:  # never a traceback: one line, and -v for the details
        if args.verbose:
            raise
        sys.stderr.write(f"clbench: internal error: {type(exc).__name__}: {_one_line(exc)} (rerun with -v for the traceback and report it)\n")
        return 1


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


@contextlib.contextmanager
def _signals_as_interrupts() -> Iterator[None]:
    """SIGTERM raises :class:`Terminated` (a ``KeyboardInterrupt``), like Ctrl-C does.

    Only the first signal interrupts; later ones are ignored until the run has put its
    directory back in order, so a second Ctrl-C cannot cut the cleanup short.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired = False

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal fired
        if fired:
            return
        fired = True
        raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


if __name__ == "__main__":
    raise SystemExit(main())
