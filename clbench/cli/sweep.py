"""``clbench sweep``: a grid of independent runs on one benchmark, run locally or on Ray, then the report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from clbench.errors import UsageError

SWEEP_EPILOG = """examples:
  clbench sweep digits-split -s lora,finetune --seed 0,1,2 -S lr=1e-4,5e-4
  clbench sweep digits-split -s lora --seed 0,1 -S rank=4,8 -S lr=1e-3,1e-2 --executor ray
  clbench sweep mtil -s mora,codyra --seed 0,1,2 --executor ray:auto --gpus-per-run 1      on a running Ray cluster

Each -S key=v1,v2 is one axis of the grid (a list value is written [a,b]); every (strategy, settings,
seed) is an independent run in its own folder (OUT/BENCHMARK/STRATEGY/seed-N-S-key=value,...). Runs
already complete are skipped, unfinished ones resume from their last checkpoint, a failed run does not
stop the others (they are listed at the end, and the exit status is 1). --executor ray needs
pip install 'clbench[ray]'.
"""


def add_parser(sub: Any) -> None:
    from clbench.cli.run import add_run_arguments

    p = sub.add_parser("sweep", help="run a grid of strategies x settings x seeds (locally or on Ray)", description="Expand a grid of "
                       "strategies, -S settings and seeds on one benchmark, run each as an independent run (in order, or as Ray tasks with "
                       "declared CPU/GPU resources), skip complete runs, resume unfinished ones, and end with the report.",
                       epilog=SWEEP_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("benchmark", help="benchmark name (clbench list benchmarks) or a .toml file")
    p.add_argument("-s", "--strategy", help="comma-separated strategy names (default: the benchmark's)")
    p.add_argument("-S", "--set", dest="overrides", action="append", default=[], metavar="KEY=V1,V2",
                   help="a grid axis: a strategy setting and its comma-separated values (repeatable)")
    p.add_argument("--seed", help="comma-separated seeds (default: the benchmark's)")
    add_run_arguments(p)
    p.add_argument("--kv-cache", default="full", metavar="POLICY", help="KV-cache policy for generation-scored evaluation (see clbench run)")
    p.add_argument("--executor", default="local", help="local (one run after another, default), ray (a local Ray instance, or the one "
                                                       "RAY_ADDRESS names) or ray:ADDRESS (join a running cluster, e.g. ray:auto)")
    p.add_argument("--cpus-per-run", type=float, default=1.0, help="CPUs Ray reserves for each run (default: 1)")
    p.add_argument("--gpus-per-run", type=float, default=None,
                   help="GPUs Ray reserves for each run (default: 1 with --device cuda..., 0 with --device cpu, and with --device auto 1 when "
                        "the Ray cluster has GPUs; fractions share a GPU)")
    p.add_argument("--report-out", type=Path, default=Path("reports"), help="where the report goes (default: reports)")
    p.add_argument("--no-report", action="store_true", help="only print the summary table, write no report")
    p.set_defaults(handler=cmd_sweep)


def _resources(args: argparse.Namespace) -> tuple[float, float | None]:
    """CPUs and GPUs per run; GPUs ``None``: decided by the cluster (``--device auto``)."""
    gpus = args.gpus_per_run
    if gpus is None:
        gpus = 1.0 if args.device.startswith("cuda") else 0.0 if args.device == "cpu" else None
    if not args.cpus_per_run > 0 or not (gpus is None or gpus >= 0):
        raise UsageError(f"--cpus-per-run must be > 0 and --gpus-per-run >= 0, got {args.cpus_per_run} and {gpus}")
    return args.cpus_per_run, gpus


def cmd_sweep(args: argparse.Namespace) -> int:
    from clbench import registry
    from clbench.cli.run import _seeds, resolve_strategies
    from clbench.preflight import preflight
    from clbench.sweep import expand_grid, import_ray, parse_executor, run_sweep

    spec, _ = registry.load_benchmark(args.benchmark)
    classes, requested = resolve_strategies(args.strategy, spec.strategies)
    seeds = _seeds(args.seed, spec.seeds)
    kind, _ = parse_executor(args.executor)
    cpus, gpus = _resources(args)
    if kind == "ray":
        import_ray()  # the missing extra is one line before anything runs
    base = {"benchmark": args.benchmark, "backbone": args.backbone, "out": args.out, "device": args.device, "data_root": args.data_root,
            "allow_download": True if args.allow_download else None, "progress": False, "kv_cache": args.kv_cache,
            "workers": args.workers}
    plans = expand_grid(args.overrides, classes, requested, seeds, base)
    for options in plans:  # every check that needs no data or model, for every run, before the first one starts
        preflight(options)
    total = len(plans)
    print(f"sweep: {total} run(s) of {spec.name} on the {args.executor} executor", flush=True)
    finished = {"n": 0}

    def notify(outcome: Any) -> None:
        finished["n"] += 1
        detail = {"skipped": "already complete", "done": f"{outcome.seconds:.1f}s", "failed": outcome.message}[outcome.status]
        print(f"[{finished['n']}/{total}] {outcome.status:7} {outcome.label}: {detail}", flush=True)

    outcomes = run_sweep(plans, args.executor, cpus, gpus, notify)
    ok = [o for o in outcomes if o.results is not None]
    if ok:
        from clbench.cli.summary import summary_lines

        rows = [(o.name, o.seed, o.results, o.seconds) for o in ok if o.results is not None]
        print("\n" + "\n".join(summary_lines(spec.metrics, rows)))
    if ok and not args.no_report:
        from clbench.report import build_report

        for path in build_report([Path(o.results["_path"]) for o in ok if o.results and "_path" in o.results], args.report_out):
            print(path)
    failed = [o for o in outcomes if o.status == "failed"]
    counts = {status: sum(o.status == status for o in outcomes) for status in ("done", "skipped", "failed")}
    print(f"sweep: {counts['done']} trained, {counts['skipped']} already complete, {counts['failed']} failed", flush=True)
    for outcome in failed:
        sys.stderr.write(f"clbench: failed: {outcome.label}: {outcome.message}\n")
    return 1 if failed else 0

