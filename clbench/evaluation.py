"""``clbench eval``: score a model on a benchmark's tasks without training it.

The model comes from one of three sources:

* a finished run's directory: its final model, rebuilt from the last checkpoint
  (:mod:`clbench.finalmodel`) with the strategy's evaluation hooks; on the run's own benchmark
  this reproduces the run's last matrix row exactly (same stream, same settings, same model);
* an export folder written by ``clbench export`` (``export.json``), unmerged adapters included;
* a backbone spec (``hf:...``, ``clip:...``, ``mlp:128``): the backbone as it loads.

The result is one row, written atomically as ``results.json`` in
``OUT/BENCHMARK/eval-SOURCE/`` with ``"kind": "eval"`` (:mod:`clbench.results_check` checks it;
``clbench report`` lists such rows beside the benchmark's runs).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clbench import registry
from clbench.asset_policy import resolve_downloads
from clbench.errors import UsageError

log = logging.getLogger("clbench")

EVAL_KIND = "eval"


@dataclass
class Source:
    """A model ready to evaluate: its backbone (bound to the run's stream, if any), the strategy
    whose evaluation hooks apply, and a description for the results file."""

    backbone: Any
    strategy: Any
    label: str
    record: dict[str, Any]
    run: Any = None  # the rebuilt run, for a run directory


def source_label(source: str) -> str:
    """A folder-safe name for ``source`` (``eval-<label>``)."""
    path = Path(source)
    if path.exists():
        parts = path.resolve().parts[-3:]
        text = "-".join(parts)
    else:
        text = source
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", text).strip("._-")[:80] or "model"


def _from_run(path: Path, data_root: Path | None, device: str) -> Source:
    from clbench.finalmodel import load_final_model

    final = load_final_model(path, device=device, data_root=data_root)
    run = final.run
    record = {"type": "run", "path": str(path.resolve()), "benchmark": final.results["benchmark"]["name"],
              "strategy": final.results["strategy"]["name"], "seed": final.results["seed"]}
    return Source(run.backbone, run.strategy, source_label(str(path)), record, run)


def _from_export(path: Path, device: str, allow_download: bool | None) -> tuple[Source, bool]:
    """A backbone built from an export folder; the flag says unmerged adapters must be attached
    once the backbone is bound to the benchmark."""
    from clbench.export import STATE_FILE, read_manifest

    manifest = read_manifest(path)
    folder = str(path.resolve())
    spec = manifest.get("load", {}).get("clbench_backbone")
    record = {"type": "export", "path": folder, "format": manifest["format"], "run": manifest.get("run"), "strategy": manifest.get("strategy")}
    if spec:
        backbone = registry.build_backbone(spec.replace("{folder}", folder), allow_download=allow_download)
    else:  # a safetensors state dict: the recorded backbone, then the weights (after binding, see evaluate_model)
        backbone = registry.build_backbone(manifest["backbone"], allow_download=allow_download)
        record["state_file"] = str(path.resolve() / STATE_FILE)
    return Source(backbone, None, source_label(str(path)), record), bool(manifest.get("unmerged_layers"))


def resolve_source(source: str, data_root: Path | None = None, device: str = "cpu", allow_download: bool | None = None) -> tuple[Source, bool]:
    """Build the model ``source`` names (run directory, export folder or backbone spec);
    ``allow_download`` (the decision of :func:`clbench.asset_policy.resolve_downloads`) goes to the
    backbone factory of an export or a spec.

    Raises:
        UsageError: a path that is neither a run nor an export, or a bad spec.
    """
    from clbench.export import MANIFEST
    from clbench.finalmodel import is_run_directory

    path = Path(source)
    if path.is_dir():
        if is_run_directory(path):
            return _from_run(path, data_root, device), False
        if (path / MANIFEST).is_file():
            return _from_export(path, device, allow_download)
        raise UsageError(f"{source} is neither a run directory (results.json + config.json) nor a clbench export (export.json)")
    if ":" not in source:
        raise UsageError(f"{source!r} is not a folder nor a backbone spec (KIND:REST, e.g. hf:/path/to/model or clip:ViT-B-16@openai)")
    backbone = registry.build_backbone(source, allow_download=allow_download)
    return Source(backbone, None, source_label(source), {"type": "backbone", "spec": source}), False


def _load_state(backbone: Any, file: str) -> None:
    from safetensors.torch import load_file

    state = load_file(file)
    if backbone.kind == "clip":  # exports of this clbench name their model config instead (see clbench.export)
        raise UsageError(f"{file} holds CLIP weights in open_clip's layout without their model config; export the run again")
    try:
        backbone.model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise UsageError(f"{file} does not fit backbone {backbone.spec} on this benchmark: {str(exc).splitlines()[0][:200]}") from None


def _rebind(backbone: Any, stream: Any) -> None:
    """Bind ``backbone`` to another benchmark's stream, keeping its weights when binding rebuilds
    the model (classic backbones build their head for the label space)."""
    before = backbone.model
    state = {k: v.detach().clone() for k, v in before.state_dict().items()}
    backbone.bind(stream)
    if backbone.model is not before:
        try:
            backbone.model.load_state_dict(state, strict=True)
        except RuntimeError:
            raise UsageError(f"backbone {backbone.spec} was trained for another label space; it cannot be scored on this benchmark's tasks") from None


def evaluate_model(source: str, benchmark: str, out: Path, *, data_root: Path | None = None, device: str = "cpu", allow_download: bool | None = None,
                   overwrite: bool = False, progress: bool = False) -> tuple[Path, dict[str, Any]]:
    """Evaluate ``source`` on every task of ``benchmark``; writes and returns the results file.

    Raises:
        UsageError: bad source or benchmark, an existing result without ``overwrite``.
        MissingAssetError, DataError: data or weights missing.
    """
    from clbench.data import build_stream, check_not_empty
    from clbench.export.adapters import attach_adapters
    from clbench.preflight import check_amp, resolve_device
    from clbench.results import RESULTS_FILE, write_json_atomic
    from clbench.rundir import run_directory
    from clbench.runner import seed_everything
    from clbench.safeio import check_output_folder
    from clbench.training import evaluate
    from clbench.validation import check_data_root

    spec, loaders = registry.load_benchmark(benchmark)
    torch_device = resolve_device(device)
    check_output_folder(Path(out), "--out")
    label = source_label(source)
    folder = run_directory(Path(out), spec.name, f"eval-{label}", 0).parent
    if (folder / RESULTS_FILE).exists() and not overwrite:
        raise UsageError(f"{folder} already holds an evaluation; pass --overwrite to replace it")
    resolved, needs_adapters = resolve_source(source, data_root, device, resolve_downloads(allow_download or None))
    backbone, strategy, run = resolved.backbone, resolved.strategy, resolved.run
    train = spec.train
    own = run is not None and run.spec.name == spec.name and run.spec.version == spec.version
    if own:  # the run's own benchmark: its stream and settings, so the last row is reproduced exactly
        stream, train = run.stream, run.train
    else:
        seed_everything(0)
        stream = build_stream(spec, extra_loaders=loaders, data_root=check_data_root(data_root), allow_download=allow_download)
        check_not_empty(spec.name, stream)
        if run is not None:
            _rebind(backbone, stream)
            train = spec.train.updated(amp=run.train.amp)  # the benchmark's evaluation batch, the run's numeric precision
        else:
            backbone.bind(stream)
            backbone.to(torch_device)
            if "state_file" in resolved.record:
                _load_state(backbone, resolved.record["state_file"])
            if needs_adapters:
                strategy = attach_adapters(backbone, resolved.record["path"], str(torch_device))
    check_amp(train, torch_device)
    row = evaluate(backbone, stream.experiences, train, progress, f"eval {label}", strategy)
    data = _results(spec, stream, backbone, resolved, row, train, torch_device)
    write_json_atomic(folder / RESULTS_FILE, data)
    log.info("evaluated %s on %s: %s", source, spec.name, ", ".join(f"{v:.3f}" for v in row))
    return folder / RESULTS_FILE, data


def _results(spec: Any, stream: Any, backbone: Any, source: Source, row: list[float], train: Any, device: torch.device) -> dict[str, Any]:
    from clbench.results import SCHEMA
    from clbench.runner import environment

    n_tasks = len(stream.tasks)
    trained = row[:n_tasks]
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    return {
        "schema": SCHEMA,
        "kind": EVAL_KIND,
        "status": "complete",
        "benchmark": {**spec.to_dict(), "backbone": spec.backbone},
        "strategy": {"name": f"eval:{source.label}", "package": None, "version": None, "config": {}},
        "source": source.record,
        "backbone": backbone.describe(),
        "seed": 0,
        "train": dataclasses.asdict(train),
        "environment": environment(device),
        "matrix": {"rows": ["eval"], "columns": [e.name for e in stream.experiences], "task_metrics": [e.metric for e in stream.experiences],
                   "values": [row]},
        "metrics": {"average_accuracy": float(np.mean(trained)) if trained else None},
        "probes": {name: {"initial": None, "final": row[n_tasks + i], "delta": None} for i, name in enumerate(spec.to_dict().get("probes", []))},
        "examples": None,
        "tasks": [],
        "telemetry": [],
        "created": now,
        "updated": now,
    }
