"""Wall time of one sweep on the ``local`` executor vs Ray on 2 CPUs.

Runs ``clbench sweep digits-split -s finetune --seed 0..N-1 -S epochs=E`` twice in fresh output
folders: once with ``--executor local`` (one run after another) and once with ``--executor ray``
on a local Ray instance of 2 CPUs (``ray.init(num_cpus=2)``, each run a task with 1 CPU), and
prints both wall times, Ray's start-up time and the ratio. Both sweeps pay the same per-run costs;
Ray adds worker start-up and runs two at a time. Run it on an idle machine (wall clocks).

    python perf/sweep_walltime.py               # 4 seeds, epochs=1
    python perf/sweep_walltime.py --seeds 8 --epochs 2
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
from pathlib import Path


def sweep(out: Path, seeds: int, epochs: int, executor: str) -> float:
    from clbench.cli import main as clbench

    args = ["sweep", "digits-split", "-s", "finetune", "--seed", ",".join(map(str, range(seeds))), "-S", f"epochs={epochs}", "--out", str(out),
            "--no-report", "--executor", executor]
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        status = clbench(args)
    seconds = time.perf_counter() - start
    if status or f"{seeds} trained" not in printed.getvalue():
        raise SystemExit(f"sweep on {executor} failed: {printed.getvalue()[-500:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=4, help="runs in the sweep (default: 4)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per task (default: 1)")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import ray

    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; {args.seeds} digits-split runs of finetune, epochs={args.epochs}")
    with tempfile.TemporaryDirectory() as tmp:
        local = sweep(Path(tmp) / "local", args.seeds, args.epochs, "local")
        start = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        startup = time.perf_counter() - start
        try:
            on_ray = sweep(Path(tmp) / "ray", args.seeds, args.epochs, "ray")
        finally:
            ray.shutdown()
    print(f"local executor {local:7.1f} s   Ray (2 CPUs) {on_ray:7.1f} s + {startup:.1f} s ray.init   ratio ray/local {on_ray / local:5.2f} "
          f"({(on_ray + startup) / local:5.2f} with start-up)")


if __name__ == "__main__":
    sys.exit(main())
