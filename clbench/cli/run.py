"""``clbench run``: run strategies on a benchmark over seeds and summarise the results."""

from __future__ import annotations

import argparse
import os
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
  clbench run digits-split --logger tensorboard,mlflow    log to TensorBoard event files and an MLflow store
  clbench run --config run.toml --seed 3            a run config file; flags override it
  clbench run --config runs/B/S/seed-0/run.toml --out rerun   run a finished run again as it ran
  clbench run trace -s lora --nproc 4 --fsdp        4 processes, the LLM's frozen weights sharded over them (FSDP2)

-S keys are checked against each strategy's settings (clbench show NAME lists them); a bare key
goes to every selected strategy that has it, NAME.key to one strategy.

A run config file (--config) holds the same choices as TOML: benchmark, strategies, seeds,
backbone, device, out, data_root, allow_download, kv_cache, loggers, progress and a [settings]
table ([settings.NAME] for one strategy). Paths in it are relative to the current folder, as on
the command line. Every run writes the configuration it ran with to RUN_DIR/run.toml.
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser("run", help="run strategies on a benchmark", description="Train and evaluate strategies on a named benchmark; "
                       "writes OUT/BENCHMARK/STRATEGY/seed-N/results.json.", epilog=RUN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("benchmark", nargs="?", help="benchmark name (clbench list benchmarks) or a .toml file (or benchmark = ... in --config)")
    p.add_argument("--config", type=Path, metavar="RUN.toml", help="a run config file; flags given here override it")
    p.add_argument("-s", "--strategy", help="comma-separated strategy names (default: the benchmark's)")
    p.add_argument("-S", "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="strategy setting override (repeatable)")
    p.add_argument("--seed", help="comma-separated seeds (default: the benchmark's)")
    add_run_arguments(p)
    p.add_argument("--logger", metavar="NAMES", help="comma-separated experiment loggers: tensorboard, wandb, mlflow or a plugin's "
                   "(clbench list loggers); each needs its extra, e.g. pip install clbench[mlflow]")
    p.add_argument("--kv-cache", metavar="POLICY",
                   help="KV-cache policy for generation-scored evaluation on causal LMs: full (default), d2o:BUDGET, h2o:BUDGET, "
                        "streaming:BUDGET or d2o-faithful:BUDGET, BUDGET a fraction of each prompt's length; results go to seed-N-kv-POLICY")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="continue unfinished runs from their last checkpoint")
    mode.add_argument("--overwrite", action="store_true", help="discard existing results in the run directories")
    p.add_argument("--no-progress", action="store_true", help="no progress reports (a bar on a terminal, else a line every 30 s)")
    p.add_argument("--nproc", type=int, metavar="N", help="data-parallel processes on this machine: launches torchrun --nproc-per-node N "
                   "-m clbench run ... (gloo on the CPU, NCCL with one GPU per process); see docs/running-at-scale.md")
    p.add_argument("--fsdp", action="store_true", help="with --nproc N (N >= 2) or under torchrun: shard the frozen weights of a causal LM "
                   "(hf:...) over the processes with FSDP2, for adapter strategies (lora, mora, codyra); the numbers are the plain run's")
    p.set_defaults(out=None, device=None)  # unset here, so that a --config file's values apply (flags > file > defaults)
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


def _first(*values: Any) -> Any:
    """The first value that was given (``None`` = not given; an empty string was given, and is checked later)."""
    return next(v for v in values if v is not None)


def _merged(args: argparse.Namespace) -> dict[str, Any]:
    """The command line over the ``--config`` file over the defaults (every value checked)."""
    from clbench.config import parse_assignments
    from clbench.loggers import parse_logger_names
    from clbench.runconfig import load_run_config

    file = load_run_config(args.config) if args.config is not None else None
    value = (lambda key: file.get(key)) if file is not None else (lambda key: None)
    benchmark = args.benchmark if args.benchmark is not None else value("benchmark")  # an empty name is the registry's error
    if benchmark is None:
        raise UsageError("no benchmark: give one (clbench run BENCHMARK) or set benchmark = \"...\" in a --config file")
    settings = dict(file.settings) if file is not None else {}
    settings.update(parse_assignments(args.overrides))  # -S on the command line wins key by key
    progress = value("progress")
    return {
        "benchmark": benchmark,
        "strategies": _split(args.strategy, "-s/--strategy") if args.strategy is not None else list(value("strategies") or []),
        "seeds": args.seed if args.seed is not None else ",".join(map(str, value("seeds"))) if value("seeds") else None,
        "settings": settings,
        "backbone": args.backbone if args.backbone is not None else value("backbone"),
        "out": args.out if args.out is not None else Path(value("out") or "runs"),
        "device": _first(args.device, value("device"), "auto"),
        "data_root": args.data_root if args.data_root is not None else (Path(value("data_root")) if value("data_root") else None),
        "allow_download": args.allow_download or bool(value("allow_download")),
        "kv_cache": _first(args.kv_cache, value("kv_cache"), "full"),
        "loggers": tuple(parse_logger_names(args.logger if args.logger is not None else value("loggers"))),
        "progress": not args.no_progress and progress is not False,
    }


def resolve_strategies(text: str | list[str] | None, default: tuple[str, ...]) -> tuple[dict[str, type], dict[str, str]]:
    """``-s`` names → (plugin name → config class, plugin name → the name as given).

    The name as given (``DIST/NAME`` stays qualified end to end) is what runs are started with; a list
    (from a ``--config`` file) is taken as already split.
    """
    from clbench import registry

    classes: dict[str, type] = {}
    requested: dict[str, str] = {}
    for name in (text if isinstance(text, list) else _split(text, "-s/--strategy")) or list(default):
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


def _check_fsdp(args: argparse.Namespace, merged: dict[str, Any]) -> None:
    """``--fsdp``'s refusals (:func:`clbench.preflight.check_fsdp`) for every selected strategy, before torchrun starts."""
    from clbench import registry
    from clbench.distributed import world_size_requested
    from clbench.kvcache import parse_kv_cache
    from clbench.preflight import check_fsdp

    spec, _ = registry.load_benchmark(merged["benchmark"])
    processes = args.nproc if args.nproc is not None and world_size_requested() <= 1 else world_size_requested()
    for name in resolve_strategies(merged["strategies"], spec.strategies)[1].values():
        check_fsdp(name, registry.get_strategy(name)[0], merged["backbone"] or spec.backbone, parse_kv_cache(merged["kv_cache"]).is_full, processes)


def cmd_run(args: argparse.Namespace) -> int:
    merged = _merged(args)  # a bad flag or --config file is one line before torch is imported
    from clbench import registry
    from clbench.distributed import world_size_requested

    if args.fsdp:
        _check_fsdp(args, merged)
    if args.nproc is not None:
        if not 1 <= args.nproc <= 1024:
            raise UsageError(f"--nproc must be between 1 and 1024, got {args.nproc}")
        if world_size_requested() > 1:
            raise UsageError("--nproc inside torchrun: run clbench run without --nproc under torchrun")
        if args.nproc > 1:
            spec, _ = registry.load_benchmark(merged["benchmark"])
            for name in resolve_strategies(merged["strategies"], spec.strategies)[1].values():
                if not getattr(registry.get_strategy(name)[0], "distributed", True):
                    raise UsageError(f"strategy {name!r} cannot run data-parallel (see docs/running-at-scale.md); run it without --nproc")
            return _launch(args)
    from clbench.config import split_overrides
    from clbench.preflight import RunOptions, preflight
    from clbench.runner import run

    spec, _ = registry.load_benchmark(merged["benchmark"])
    classes, requested = resolve_strategies(merged["strategies"], spec.strategies)
    routed = split_overrides(merged["settings"], classes)
    seeds = _seeds(merged["seeds"], spec.seeds)
    plans = [RunOptions(benchmark=merged["benchmark"], strategy=requested[name], overrides=routed[name], backbone=merged["backbone"], seed=seed,
                        out=merged["out"], device=merged["device"], resume=args.resume, overwrite=args.overwrite, data_root=merged["data_root"],
                        allow_download=True if merged["allow_download"] else None, progress=merged["progress"],
                        kv_cache=merged["kv_cache"], loggers=merged["loggers"], workers=args.workers, fsdp=args.fsdp)
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
