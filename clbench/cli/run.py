"""``clbench run``: run strategies on a benchmark over seeds and summarise the results."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from clbench.errors import UsageError

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
    p.add_argument("--backbone", help="backbone spec replacing the benchmark's default, e.g. mlp:256 or hf:/path/to/model")
    p.add_argument("--seed", help="comma-separated seeds (default: the benchmark's)")
    p.add_argument("--out", type=Path, default=Path("runs"), help="root folder for run directories (default: runs)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--data-root", type=Path, help="dataset folder (default: $CLBENCH_DATA_ROOT)")
    p.add_argument("--allow-download", action="store_true", help="let loaders download missing datasets and models")
    p.add_argument("--kv-cache", default="full", metavar="POLICY",
                   help="KV-cache policy for generation-scored evaluation on causal LMs: full (default), d2o:BUDGET, h2o:BUDGET, "
                        "streaming:BUDGET or d2o-faithful:BUDGET, BUDGET a fraction of each prompt's length; results go to seed-N-kv-POLICY")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="continue unfinished runs from their last checkpoint")
    mode.add_argument("--overwrite", action="store_true", help="discard existing results in the run directories")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(handler=cmd_run)


def _split(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def _seeds(text: str | None, default: tuple[int, ...]) -> list[int]:
    if not text:
        return list(default)
    try:
        return [int(s) for s in _split(text)]
    except ValueError:
        raise UsageError(f"--seed takes comma-separated integers, got {text!r}") from None


def cmd_run(args: argparse.Namespace) -> int:
    from clbench import registry
    from clbench.config import build_config, parse_assignments, split_overrides
    from clbench.kvcache import parse_kv_cache
    from clbench.runner import RunOptions, run

    parse_kv_cache(args.kv_cache)  # a bad policy fails before anything runs

    spec, _ = registry.load_benchmark(args.benchmark)
    names = _split(args.strategy) or list(spec.strategies)
    classes = {}
    for name in names:
        cls, plugin = registry.get_strategy(name)
        classes[plugin.name] = cls.Config
    routed = split_overrides(parse_assignments(args.overrides), classes)
    for name, config_cls in classes.items():  # check every override before the first run starts
        build_config(config_cls, routed[name], owner=f"strategy {name!r}")
    seeds = _seeds(args.seed, spec.seeds)
    summary = []
    for name in classes:
        for seed in seeds:
            start = time.perf_counter()
            options = RunOptions(benchmark=args.benchmark, strategy=name, overrides=routed[name], backbone=args.backbone, seed=seed,
                                 out=args.out, device=args.device, resume=args.resume, overwrite=args.overwrite, data_root=args.data_root,
                                 allow_download=True if args.allow_download else None, progress=not args.no_progress and sys.stderr.isatty(),
                                 kv_cache=args.kv_cache)
            results = run(options)
            summary.append((name, seed, results, time.perf_counter() - start))
    _print_summary(spec.metrics, summary)
    return 0


def _print_summary(metric_names: tuple[str, ...], summary: list[tuple[str, int, dict[str, Any], float]]) -> None:
    from clbench.cli.summary import summary_lines

    print("\n" + "\n".join(summary_lines(metric_names, summary)))
