"""CPU seconds each quick ``clbench`` command costs to start, now and at another git revision.

    python perf/cli_startup.py                 # the working tree only
    python perf/cli_startup.py --before main   # side by side with the clbench package as committed at main

Each command runs in a fresh interpreter (``python -c 'from clbench.cli import main; ...'``);
the figure is the child's user + system CPU time (``os.wait4``), the median of ``--repeat`` runs,
with "before" and "after" runs interleaved so that load on a shared machine hits both alike.
For ``--before`` the package at that revision (``clbench/`` plus the ``strategies/``, ``kernels/``
and ``benchmarks/`` folders mapped into it) is extracted with ``git archive`` into a temporary
folder, and the child drops the editable install's import hook so that it imports that copy; entry
points still come from the installed metadata.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
COMMANDS = (["--help"], ["list"], ["show", "mora"], ["show", "lora"], ["show", "codyra"], ["show", "digits-split"], ["run", "--help"])
LAUNCH = "import sys; from clbench.cli import main; raise SystemExit(main(sys.argv[1:]))"
# For "before": forget the editable install's finder (it maps clbench to the working tree), import the extracted copy.
LAUNCH_FROM = ("import sys; sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, '__module__', '').startswith('__editable__')]; "
               "sys.path.insert(0, sys.argv.pop(1)); " + LAUNCH)
MAPPED = ("strategies", "kernels", "benchmarks")


def cpu_seconds(args: list[str], pythonpath: str | None) -> float:
    """User + system CPU seconds of one ``clbench ARGS`` in a fresh interpreter."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    launch = [sys.executable, "-c", LAUNCH_FROM, pythonpath] if pythonpath else [sys.executable, "-c", LAUNCH]
    proc = subprocess.Popen([*launch, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=REPO)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"clbench {' '.join(args)} failed: {proc.stderr.read().decode()[-300:] if proc.stderr else ''}")
    return usage.ru_utime + usage.ru_stime


def extract(ref: str, folder: Path) -> None:
    """The package at ``ref`` laid out as installed: ``folder/clbench`` with the mapped folders inside."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", ref, "clbench", *MAPPED], capture_output=True)
    if archive.returncode != 0:
        raise SystemExit(f"cannot read the package at {ref!r}: {archive.stderr.decode().strip()}")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(folder, filter="data")
    for name in MAPPED:
        (folder / name).rename(folder / "clbench" / name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", metavar="REF", help="also time the clbench package as committed at this git revision")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.before:
            extract(args.before, Path(tmp))
        print(f"{'command':<26}" + (f"{'before (' + args.before + ')':>18}" if args.before else "") + f"{'now':>10}   CPU seconds, median of {args.repeat}")
        for command in COMMANDS:
            before, now = [], []
            for _ in range(args.repeat):
                if args.before:
                    before.append(cpu_seconds(command, tmp))
                now.append(cpu_seconds(command, None))
            cells = (f"{statistics.median(before):>18.2f}" if before else "") + f"{statistics.median(now):>10.2f}"
            print(f"{'clbench ' + ' '.join(command):<26}{cells}")


if __name__ == "__main__":
    main()
