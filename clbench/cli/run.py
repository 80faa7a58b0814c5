"""``clbench run``: run strategies on a benchmark over seeds and summarise the results."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from clbench.errors import UsageError
from clbench.validation import parse_seed

RUN_EPILOG = """examples:
  clbench run digits-split                          the benchmark's default strategies and seeds
  clbench run digits-split -s lora,finetune --seed 0,1
  clbench run digits-split -s lora -S rank=4 -S lora.merge_after_task=true
  clbench run quickstart --resume                   continue a killed run from its last task
  clbench run trace -s lora --kv-cache d2o:0.2      generation-scored tasks evaluated under D2O at a 20% KV budget

-S keys are checked against each strategy's settings (clbench show NAME lists them); a bare key
goes to every selected strategy that has it, NAME.key to one strategy.
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser("run", help="run strategies on a benchmark", description="Train and evaluate strategies on a named benchmark; "
                       "writes OUT/BENCHMARK/STRATEGY/seed-N/results.json.", epilog=RUN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("benchmark", help="benchmark name (clbench list benchmarks) or a .toml file")
    p.add_argument("-s", "--strategy", help="comma-separated strategy names (default: the benchmark's)")
    p.add_argument("-S", "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="strategy setting override (repeatable)")
    p.add_argument("--seed", help="comma-separated seeds (default: the benchmark's)")
    add_run_arguments(p)
    p.add_argument("--kv-cache", default="full", metavar="POLICY",
                   help="KV-cache policy for generation-scored evaluation on causal LMs: full (default), d2o:BUDGET, h2o:BUDGET, "
                        "streaming:BUDGET or d2o-faithful:BUDGET, BUDGET a fraction of each prompt's length; results go to seed-N-kv-POLICY")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="continue unfinished runs from their last checkpoint")
    mode.add_argument("--overwrite", action="store_true", help="discard existing results in the run directories")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--nproc", type=int, metavar="N", help="data-parallel processes on this machine: launches torchrun --nproc-per-node N "
                   "-m clbench run ... (gloo on the CPU, NCCL with one GPU per process); see docs/running-at-scale.md")
    p.set_defaults(handler=cmd_run)


def add_run_arguments(p: Any) -> None:
    """The options every run takes (``clbench run`` and ``clbench sweep``)."""
    p.add_argument("--backbone", help="backbone spec replacing the benchmark's default, e.g. mlp:256 or hf:/path/to/model")
    p.add_argument("--out", type=Path, default=Path("runs"), help="root folder for run directories (default: runs)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto), resolved where the run executes")
    p.add_argument("--data-root", type=Path, help="dataset folder (default: $CLBENCH_DATA_ROOT); on a cluster, a path every node sees")
    p.add_argument("--allow-download", action="store_true", help="let loaders download missing datasets and models")
    p.add_argument("--workers", type=int, metavar="N", help="DataLoader worker processes (default: 0 on the CPU, up to 8 on CUDA); "
                   "the numbers do not depend on it")


def _split(text: str | None, option: str) -> list[str]:
    """Comma-separated names; ``None`` (option not given) is an empty list, an empty item an error."""
    if text is None:
        return []
    parts = [part.strip() for part in text.split(",")]
    if not any(parts):
        raise UsageError(f"{option} is empty; give comma-separated names, e.g. {option} lora,finetune" if option != "--seed"
                         else "--seed is empty; give comma-separated integers, e.g. --seed 0,1")
    if not all(parts):
        raise UsageError(f"{option} {text!r} has an empty item; separate names with single commas")
    duplicates = sorted({p for p in parts if parts.count(p) > 1})
    if duplicates:
        raise UsageError(f"{option} {text!r} repeats {', '.join(duplicates)}")
    return parts


def _seeds(text: str | None, default: tuple[int, ...]) -> list[int]:
    if text is None:
        return list(default)
    seeds = [parse_seed(part) for part in _split(text, "--seed")]
    if len(set(seeds)) != len(seeds):
        raise UsageError(f"--seed {text!r} repeats a seed")
    return seeds


def resolve_strategies(text: str | None, default: tuple[str, ...]) -> tuple[dict[str, type], dict[str, str]]:
    """``-s`` names → (plugin name → config class, plugin name → the name as given).

    The name as given (``DIST/NAME`` stays qualified end to end) is what runs are started with.
    """
    from clbench import registry

    classes: dict[str, type] = {}
    requested: dict[str, str] = {}
    for name in _split(text, "-s/--strategy") or list(default):
        cls, plugin = registry.get_strategy(name)
        if plugin.name in classes:
            raise UsageError(f"-s names strategy {plugin.name!r} twice ({requested[plugin.name]!r} and {name!r}); their runs would share "
                             "one folder: run them with different --out")
        classes[plugin.name] = cls.Config
        requested[plugin.name] = name
    return classes, requested


def _launch(args: argparse.Namespace) -> int:
    """``--nproc N``: the same command under ``torch.distributed.run`` (torchrun), N processes on this machine."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    rest, skip = [], False
    for item in args.argv:
        if skip or item == "--nproc":
            skip = not skip
            continue
        if not item.startswith("--nproc="):
            rest.append(item)
    try:
        torchrun(["--standalone", "--nproc-per-node", str(args.nproc), "-m", "clbench", *rest])
    except ChildFailedError as exc:
        failures = list(exc.failures.values())
        code = failures[0].exitcode if failures else 1
        raise SystemExit(code if isinstance(code, int) and code > 0 else 1) from None
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from clbench import registry
    from clbench.distributed import world_size_requested

    if args.nproc is not None:
        if not 1 <= args.nproc <= 1024:
            raise UsageError(f"--nproc must be between 1 and 1024, got {args.nproc}")
        if world_size_requested() > 1:
            raise UsageError("--nproc inside torchrun: run clbench run without --nproc under torchrun")
        if args.nproc > 1:
            spec, _ = registry.load_benchmark(args.benchmark)
            for name in resolve_strategies(args.strategy, spec.strategies)[1].values():
                if not getattr(registry.get_strategy(name)[0], "distributed", True):
                    raise UsageError(f"strategy {name!r} cannot run data-parallel (see docs/running-at-scale.md); run it without --nproc")
            return _launch(args)
    from clbench.config import parse_assignments, split_overrides
    from clbench.preflight import RunOptions, preflight
    from clbench.runner import run

    spec, _ = registry.load_benchmark(args.benchmark)
    classes, requested = resolve_strategies(args.strategy, spec.strategies)
    routed = split_overrides(parse_assignments(args.overrides), classes)
    seeds = _seeds(args.seed, spec.seeds)
    plans = [RunOptions(benchmark=args.benchmark, strategy=requested[name], overrides=routed[name], backbone=args.backbone, seed=seed,
                        out=args.out, device=args.device, resume=args.resume, overwrite=args.overwrite, data_root=args.data_root,
                        allow_download=True if args.allow_download else None, progress=not args.no_progress and sys.stderr.isatty(),
                        kv_cache=args.kv_cache, workers=args.workers)
             for name in classes for seed in seeds]
    for options in plans:  # every check that needs no data or model, for every run, before the first one starts
        preflight(options)
    summary = []
    for options in plans:
        start = time.perf_counter()
        results = run(options)
        summary.append((registry.resolve("strategies", options.strategy).name, options.seed, results, time.perf_counter() - start))
    if world_size_requested() <= 1 or int(os.environ.get("RANK", "0")) == 0:
        _print_summary(spec.metrics, summary)
    return 0


def _print_summary(metric_names: tuple[str, ...], summary: list[tuple[str, int, dict[str, Any], float]]) -> None:
    from clbench.cli.summary import summary_lines

    print("\n" + "\n".join(summary_lines(metric_names, summary)))
