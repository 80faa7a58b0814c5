"""Everything a run checks before it touches the disk: options, device, names, folders, locks.

:func:`preflight` makes every check of one run that needs neither data nor a model (``clbench run``
calls it for every strategy and seed before the first run starts); :func:`existing_complete`
finds a finished run a ``--resume`` can return as it is. Neither writes anything. The runner
(:mod:`clbench.runner`) then builds data, model and strategy, still without writing, and only
then takes the run directory (:mod:`clbench.rundir`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from clbench import registry
from clbench.api.benchmark import BenchmarkSpec, TrainSettings
from clbench.api.strategy import Strategy, StrategyConfig
from clbench.config import build_config
from clbench.errors import ResultsError, UsageError
from clbench.hardware import bf16_is_native
from clbench.identity import describe_difference, legacy_folder, results_identity, run_identity, settings_diff
from clbench.kvcache import KVCachePolicy, parse_kv_cache
from clbench.loggers import check_loggers
from clbench.results import RESULTS_FILE, load_results
from clbench.rundir import holder, in_use_error, run_directory
from clbench.safeio import check_output_folder
from clbench.validation import check_data_root, check_seed

log = logging.getLogger("clbench")

__all__ = ["Preflight", "RunOptions", "check_amp", "warn_emulated_bf16", "existing_complete", "is_main_process", "preflight", "resolve_device", "resolve_identity", "check_fsdp"]


@dataclass
class RunOptions:
    """One run of one strategy on one benchmark with one seed.

    Attributes:
        benchmark: a registered benchmark name, ``dist/name``, or a path to a ``.toml`` file.
        strategy: a registered strategy name (or ``dist/name``).
        overrides: strategy config overrides as raw strings (``-S key=value``).
        backbone: backbone spec replacing the benchmark's default.
        seed: the run seed.
        out: root folder; the run lives in ``out/<benchmark>/<strategy>/seed-<seed>``.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        resume: continue an unfinished run from its last checkpoint.
        overwrite: discard an existing run directory's results and start again.
        data_root: dataset folder (default ``$CLBENCH_DATA_ROOT``).
        allow_download: let loaders download missing data (default ``$CLBENCH_ALLOW_DOWNLOAD``).
        progress: show progress bars.
        kv_cache: KV-cache policy for generation-scored evaluation (``full``, ``d2o:0.2``, ...;
            see :mod:`clbench.kvcache`); a non-full policy gets its own run directory
            (``seed-N-kv-<policy>``) and records KV bytes and retained accuracy per task.
        loggers: experiment loggers (``clbench.loggers`` entry points: ``tensorboard``,
            ``wandb``, ``mlflow``, ...); each is checked before the run and started before training.
        workers: DataLoader worker processes (``None``: the device's default, see
            :mod:`clbench.loading`); the numbers do not depend on it.
        fsdp: shard the frozen weights of a causal LM over the torchrun processes (FSDP2, see
            :mod:`clbench.fsdp`); the numbers are those of a plain data-parallel run.
    """

    benchmark: str
    strategy: str
    overrides: dict[str, str] = field(default_factory=dict)
    backbone: str | None = None
    seed: int = 0
    out: Path = Path("runs")
    device: str = "auto"
    resume: bool = False
    overwrite: bool = False
    data_root: Path | None = None
    allow_download: bool | None = None
    progress: bool = True
    kv_cache: str = "full"
    loggers: tuple[str, ...] = ()
    workers: int | None = None
    fsdp: bool = False


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available; asking for CUDA without one is a usage error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {name!r} requested but no CUDA device is available; use --device cpu")
    return device


def is_main_process() -> bool:
    """True on rank 0 of a distributed run (and on every single-process run)."""
    return int(os.environ.get("RANK", "0")) == 0


def check_amp(train: TrainSettings, device: torch.device) -> None:
    if train.amp == "fp16" and device.type != "cuda":
        raise UsageError(f"amp=fp16 needs a CUDA device but the run is on {device}; use amp=bf16 or amp=none on the CPU")


def warn_emulated_bf16(train: TrainSettings, device: torch.device) -> None:
    """One warning when ``amp=bf16`` runs where bf16 is emulated: the run is right, but slow.

    The setting stays the benchmark's (it is part of the run's settings, and bf16 and fp32 answers
    differ on a few prompts), so the choice is the user's: ``-S amp=none``.
    """
    if train.amp == "bf16" and not bf16_is_native(device) and is_main_process():
        where = "this CPU has no AVX512-BF16 or AMX" if device.type == "cpu" else f"{device} has no bf16 support"
        log.warning("amp=bf16: %s, so bf16 autocast is emulated and can be several times slower than fp32 (7.6x for the quickstart's "
                    "evaluation on an AVX2 CPU); -S amp=none trains and evaluates in fp32 (other settings, so another run folder)", where)


@dataclass(frozen=True)
class Preflight:
    """What :func:`preflight` resolved for one run."""

    spec: BenchmarkSpec
    loaders: dict[str, Any]
    strategy_cls: type[Strategy]
    plugin: registry.Plugin
    config: StrategyConfig
    device: torch.device
    run_dir: Path
    kv_policy: KVCachePolicy
    identity: dict[str, Any]


def preflight(options: RunOptions) -> Preflight:
    """Every check of a run that needs neither data nor a model, and writes nothing.

    Resolves the benchmark, strategy, config (with the training settings it implies), device,
    ``--data-root`` and the run directory (each part one plain folder name), and refuses an
    output folder that cannot be written or a run directory that already holds a run (without
    ``--resume``/``--overwrite``). ``clbench run`` calls it for every strategy and seed before
    the first run starts.
    """
    check_seed(options.seed)
    check_loggers(options.loggers)
    if options.backbone is not None and not options.backbone.strip():
        raise UsageError("--backbone is empty; give a backbone spec such as mlp:128 (clbench list backbones)")
    spec, loaders = registry.load_benchmark(options.benchmark)
    strategy_cls, plugin = registry.get_strategy(options.strategy)
    config = build_config(strategy_cls.Config, options.overrides, owner=f"strategy {plugin.name!r}")
    device = resolve_device(options.device)
    try:  # the training settings this config implies for any backbone (explicit -S values only)
        explicit = spec.train.updated(**StrategyConfig.train_overrides(config, ""))
    except UsageError as exc:
        raise UsageError(f"strategy {plugin.name!r}: {exc}") from None
    check_amp(explicit, device)
    check_data_root(options.data_root)
    if options.workers is not None and not 0 <= options.workers <= 256:
        raise UsageError(f"--workers must be between 0 and 256, got {options.workers}")
    kv_policy = parse_kv_cache(options.kv_cache)
    if options.fsdp:
        check_fsdp(plugin.name, strategy_cls, options.backbone or spec.backbone, kv_policy.is_full)
    identity, run_dir = resolve_identity(options, spec, plugin, config, kv_policy)
    check_output_folder(Path(options.out), "--out")
    if is_main_process():  # other ranks of a distributed run neither lock nor write: rank 0 may already hold the directory
        who = holder(run_dir)
        if who is not None:
            raise in_use_error(run_dir, who)
        if not (options.resume or options.overwrite) and (run_dir / RESULTS_FILE).exists():
            raise UsageError(f"{run_dir} already holds a run; pass --resume to continue it or --overwrite to start again")
    return Preflight(spec, loaders, strategy_cls, plugin, config, device, run_dir, kv_policy, identity)


FSDP_STRATEGIES_HINT = "strategies that train adapters on a frozen causal LM and say they run sharded (lora, mora, codyra)"


def check_fsdp(name: str, strategy_cls: type[Strategy], backbone_spec: str, full_kv_cache: bool, processes: int | None = None) -> None:
    """Refuse ``--fsdp`` where it cannot run, before anything is built or written.

    ``processes``: how many processes the run will have (``None``: as many as torchrun started).

    Raises:
        UsageError: fewer than 2 processes, a backbone that is not a transformers model, a
            strategy that does not declare :attr:`Strategy.fsdp`, or a KV-cache policy.
    """
    from clbench.distributed import world_size_requested

    if (processes if processes is not None else world_size_requested()) < 2:
        raise UsageError("--fsdp shards the model over processes: add --nproc N with N >= 2 (or launch clbench under torchrun with 2 or more)")
    family = registry.split_backbone_spec(backbone_spec)[1].partition(":")[0]
    if family != "hf":
        raise UsageError(f"--fsdp shards causal LMs (hf:... backbones), not {backbone_spec!r}; run it without --fsdp")
    if not strategy_cls.fsdp:
        raise UsageError(f"strategy {name!r} cannot run sharded (--fsdp): {strategy_cls.fsdp_refusal or 'it is not one of the ' + FSDP_STRATEGIES_HINT}; "
                         "run it without --fsdp")
    if not full_kv_cache:
        raise UsageError("--fsdp with a --kv-cache policy is not supported (the policies' caches were not checked on sharded layers); "
                         "use one or the other")


def resolve_identity(options: RunOptions, spec: BenchmarkSpec, plugin: registry.Plugin, config: StrategyConfig,
                     kv_policy: KVCachePolicy) -> tuple[dict[str, Any], Path]:
    """The run's identity (:func:`clbench.identity.run_identity`) and its run directory.

    The directory names the non-default settings; a run started before folders did (in the plain
    ``seed-N`` folder) is found there when that folder holds a run of this very identity.
    """
    backbone = registry.split_backbone_spec(options.backbone or spec.backbone)[1]
    identity = run_identity(spec.name, spec.version, plugin.name, config.to_dict(), backbone, options.seed,
                            None if kv_policy.is_full else kv_policy.describe())
    settings = settings_diff(config)
    run_dir = run_directory(options.out, spec.name, plugin.name, options.seed, options.kv_cache, settings)
    legacy = legacy_folder(run_dir, settings)
    if legacy is not None and not run_dir.exists() and _recorded_identity(legacy) == identity:
        return identity, legacy
    return identity, run_dir


def _recorded_identity(run_dir: Path) -> dict[str, Any] | None:
    """The identity ``run_dir/results.json`` records, or ``None`` (no file, or unreadable)."""
    try:
        return results_identity(load_results(run_dir / RESULTS_FILE))
    except (ResultsError, KeyError, TypeError, AttributeError):
        return None


def existing_complete(out: Path, options: RunOptions) -> dict[str, Any] | None:
    """A complete results file of this very run, if one exists (cheap: no model is built).

    Its recorded identity (:mod:`clbench.identity`) must equal this run's; anything else is
    refused rather than returned as finished.

    Raises:
        UsageError: the finished run used other settings, another benchmark version or another
            package's strategy of the same name.
    """
    try:
        spec, _ = registry.load_benchmark(options.benchmark)
        strategy_cls, plugin = registry.get_strategy(options.strategy)
        config = build_config(strategy_cls.Config, options.overrides, owner=f"strategy {plugin.name!r}")
        identity, run_dir = resolve_identity(dataclasses.replace(options, out=out), spec, plugin, config, parse_kv_cache(options.kv_cache))
    except UsageError:
        return None
    path = run_dir / RESULTS_FILE
    if not path.exists():
        return None
    data = load_results(path)
    if data["status"] != "complete":
        return None
    saved = results_identity(data)
    if saved["benchmark"]["version"] != spec.version:
        raise UsageError(f"{path.parent} finished under version {saved['benchmark']['version']} of benchmark {spec.name}, now at version "
                         f"{spec.version}; use --overwrite to run it again")
    if data["strategy"].get("package", plugin.dist) != plugin.dist:
        raise UsageError(f"{path.parent} was run with strategy {plugin.name!r} from {data['strategy'].get('package')}, not from {plugin.dist}; "
                         "use another --out or --overwrite")
    if saved != identity:
        raise UsageError(f"{path.parent} already finished with other settings ({', '.join(describe_difference(saved, identity))}); "
                         "use --overwrite to start again")
    return data
