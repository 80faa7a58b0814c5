"""``clbench export``: a finished run's final model as a checkpoint the ecosystem loads without clbench.

Formats (:data:`FORMATS`):

* ``hf``: a ``save_pretrained`` folder (weights in safetensors, config, tokenizer) that
  ``transformers.AutoModelForCausalLM.from_pretrained(folder)`` loads (LLM backbones);
* ``open_clip``: ``open_clip_model.safetensors`` in open_clip's own layout (fused attention
  projections) plus the model config ``<arch>.json``, for
  ``open_clip.add_model_config(folder / "<arch>.json")`` and
  ``open_clip.create_model_and_transforms("<arch>", pretrained=folder / "open_clip_model.safetensors")``;
* ``safetensors``: ``model.safetensors``, the model's state dict in its library's layout (CLIP:
  open_clip's; transformers models: theirs; other backbones: the torch module's), for any backbone.

The model is rebuilt from the run's last checkpoint (:mod:`clbench.finalmodel`); adapters whose
update is a fixed weight delta are merged into the weights (:mod:`clbench.export.adapters`).
Routed adapters (MoRA, SMoRA, FlyLoRA) cannot be merged: the export then holds the plain backbone
plus ``adapters.safetensors`` and ``adapters.json``, which
``clbench.export.adapters.attach_adapters(backbone, folder)`` puts back (``clbench eval`` does
it). ``export.json`` records what was exported, from which run, and how to load it.

Everything is checked and built in memory first; files go to a hidden temporary folder beside
``--out`` that is renamed into place at the end, so an export that fails leaves nothing behind,
and an existing non-empty ``--out`` is refused unless ``overwrite`` (then it is replaced only once
the new export is complete).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from clbench.errors import UsageError
from clbench.export.adapters import ADAPTERS_FILE, ADAPTERS_META, adapter_record, fold_adapters, split_adapters
from clbench.safeio import check_output_folder, ensure_free_space, make_dirs, remove_empty_dirs, remove_tree, write_json_atomic

FORMATS = ("hf", "open_clip", "safetensors")
MANIFEST = "export.json"
CLIP_WEIGHTS = "open_clip_model.safetensors"
STATE_FILE = "model.safetensors"


@dataclass
class ExportResult:
    """What :func:`export_run` wrote."""

    folder: Path
    format: str
    merged_layers: int
    unmerged_layers: int
    manifest: dict[str, Any]


def check_format(fmt: str, kind: str, spec: str) -> None:
    """Refuse a format the backbone kind cannot be written in (before anything is built)."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown export format {fmt!r}; valid: {', '.join(FORMATS)}")
    if fmt == "hf" and kind != "llm":
        raise UsageError(f"--format hf writes transformers language models; backbone {spec!r} is a {kind} backbone (use --format safetensors)")
    if fmt == "open_clip" and kind != "clip":
        raise UsageError(f"--format open_clip writes CLIP models; backbone {spec!r} is a {kind} backbone (use --format safetensors)")


def check_destination(out: Path, overwrite: bool) -> None:
    """Refuse an existing non-empty ``out`` (unless ``overwrite``) or an unwritable place."""
    if out.exists():
        if not out.is_dir():
            raise UsageError(f"--out {out} is a file; give a folder")
        if any(out.iterdir()) and not overwrite:
            raise UsageError(f"--out {out} is not empty; choose another folder or pass --overwrite to replace it")
    check_output_folder(out.parent if out.parent != Path("") else Path("."), "--out")


def default_out(run_dir: Path, fmt: str) -> Path:
    """``exports/BENCHMARK/STRATEGY/seed-N-FORMAT`` beside the runs' root folder (``OUT/..``), so
    exports never sit among run directories."""
    resolved = run_dir.resolve()
    return resolved.parents[3] / "exports" / resolved.parents[1].name / resolved.parent.name / f"{resolved.name}-{fmt}"


def _plain(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous, unshared copies (safetensors refuses tensors that share memory, e.g. tied embeddings)."""
    return {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}


def native_state_dict(backbone: Any) -> dict[str, torch.Tensor]:
    """The model's state dict in its library's own layout (CLIP: open_clip's fused attention)."""
    if backbone.kind == "clip":
        from clbench.backbones.clip_attention import fused_state_dict

        return _plain(fused_state_dict(backbone.model))
    return _plain(backbone.model.state_dict())


def _clip_arch(spec: str) -> tuple[str, dict[str, Any]]:
    """The open_clip architecture of a ``clip:`` spec and its model config (with the activation
    the weights were trained with, which a pretrained tag may force)."""
    import open_clip

    from clbench.backbones.clip_loading import parse_spec, resolve_weights

    parsed = parse_spec(spec)
    config = dict(open_clip.get_model_config(parsed.arch) or {})
    if not config:
        raise UsageError(f"open_clip has no model config for {parsed.arch!r}; cannot export it")
    if parsed.weights and not parsed.is_file and resolve_weights(parsed, spec).options.get("force_quick_gelu"):
        config["quick_gelu"] = True
    return parsed.arch, config


def _write_files(tmp: Path, fmt: str, backbone: Any, adapters: dict[str, torch.Tensor], adapter_meta: dict[str, Any] | None) -> dict[str, Any]:
    """Write the model files into ``tmp``; returns how to load them (for the manifest)."""
    from safetensors.torch import save_file

    spec = backbone.spec
    if fmt == "hf":
        backbone.model.save_pretrained(tmp, safe_serialization=True)
        backbone.tokenizer.save_pretrained(tmp)
        auto = "AutoModelForSeq2SeqLM" if getattr(backbone.model.config, "is_encoder_decoder", False) else "AutoModelForCausalLM"
        how = {"python": f"transformers.{auto}.from_pretrained(FOLDER); transformers.AutoTokenizer.from_pretrained(FOLDER)",
               "clbench_backbone": f"hf:{{folder}}"}
    elif fmt == "open_clip":
        arch, config = _clip_arch(spec)
        (tmp / f"{arch}.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
        save_file(native_state_dict(backbone), str(tmp / CLIP_WEIGHTS), metadata={"format": "pt"})
        how = {"python": f"open_clip.add_model_config(FOLDER / '{arch}.json'); "
                         f"open_clip.create_model_and_transforms('{arch}', pretrained=str(FOLDER / '{CLIP_WEIGHTS}'))",
               "clbench_backbone": f"clip:{{folder}}/{arch}.json@{{folder}}/{CLIP_WEIGHTS}"}
    else:
        save_file(native_state_dict(backbone), str(tmp / STATE_FILE), metadata={"format": "pt", "backbone": spec})
        how = {"python": f"model.load_state_dict(safetensors.torch.load_file(FOLDER / '{STATE_FILE}')) (model built as backbone {spec})",
               "clbench_backbone": None}
        if backbone.kind == "clip":  # open_clip's layout: the model config makes the file loadable as open_clip weights too
            arch, config = _clip_arch(spec)
            (tmp / f"{arch}.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
            how = {"python": f"open_clip.add_model_config(FOLDER / '{arch}.json'); open_clip.create_model('{arch}').load_state_dict("
                             f"safetensors.torch.load_file(FOLDER / '{STATE_FILE}'))",
                   "clbench_backbone": f"clip:{{folder}}/{arch}.json@{{folder}}/{STATE_FILE}"}
    if adapter_meta is not None:
        save_file(adapters, str(tmp / ADAPTERS_FILE), metadata={"format": "pt"})
        (tmp / ADAPTERS_META).write_text(json.dumps(adapter_meta, indent=2), encoding="utf-8")
        how["adapters"] = "clbench.export.adapters.attach_adapters(backbone, FOLDER) after building the backbone from this folder's weights"
    return how


def export_run(run_dir: Path | str, fmt: str, out: Path | str | None = None, *, overwrite: bool = False, data_root: Path | None = None) -> ExportResult:
    """Export the final model of the finished run in ``run_dir`` as ``fmt`` into ``out``.

    Raises:
        UsageError: bad format for the backbone, an unusable destination, an unfinished run
            or a checkpoint that cannot be rebuilt (before anything is written).
        MissingAssetError, DataError: the run's data or base weights are missing here.
    """
    from clbench.finalmodel import load_final_model
    from clbench.results import RESULTS_FILE, load_results

    run_dir = Path(run_dir)
    if not (run_dir / RESULTS_FILE).is_file():
        raise UsageError(f"{run_dir} is not a run directory (no {RESULTS_FILE}); give OUT/BENCHMARK/STRATEGY/seed-N")
    results = load_results(run_dir / RESULTS_FILE)
    check_format(fmt, str(results["backbone"].get("kind", "")), results["backbone"]["spec"])
    destination = Path(out) if out is not None else default_out(run_dir, fmt)
    if destination.resolve() == run_dir.resolve() or run_dir.resolve() in destination.resolve().parents:
        raise UsageError(f"--out {destination} is inside the run directory; choose a folder outside it")
    check_destination(destination, overwrite)
    final = load_final_model(run_dir, data_root=data_root)
    backbone, options = final.run.backbone, final.run.options
    merged = fold_adapters(backbone.model)
    adapters, classes = split_adapters(backbone.model)
    adapter_meta = adapter_record(final.run.plugin.name, options.overrides, final.run.strategy.state_dict(), classes) if classes else None
    manifest: dict[str, Any] = {
        "format": fmt, "run": str(run_dir.resolve()), "benchmark": results["benchmark"]["name"], "strategy": results["strategy"]["name"],
        "strategy_config": results["strategy"]["config"], "backbone": backbone.spec, "backbone_kind": backbone.kind, "seed": results["seed"],
        "merged_layers": merged, "unmerged_layers": sorted(classes), "final_row": final.last_row, "columns": results["matrix"]["columns"],
    }
    created = make_dirs(destination.parent)
    tmp: Path | None = None
    try:
        needed = sum(t.numel() * t.element_size() for t in [*backbone.model.state_dict().values(), *adapters.values()])
        ensure_free_space(destination.parent, needed, f"export {destination}")
        tmp = Path(tempfile.mkdtemp(prefix=f".{destination.name}.tmp-", dir=destination.parent))
        manifest["load"] = _write_files(tmp, fmt, backbone, adapters, adapter_meta)
        write_json_atomic(tmp / MANIFEST, manifest)
        _put_in_place(tmp, destination)
    except BaseException:  # nothing of a failed export stays: its temporary folder, nor the folders made for it
        if tmp is not None:
            remove_tree(tmp)
        remove_empty_dirs(created)
        raise
    return ExportResult(destination, fmt, merged, len(classes), manifest)


def _put_in_place(tmp: Path, destination: Path) -> None:
    """Rename the finished export to ``destination``; an existing one is moved aside first and
    deleted only after the rename (so a failure keeps it)."""
    aside = None
    if destination.exists():
        aside = destination.parent / f".{destination.name}.old-{os.getpid()}"
        os.replace(destination, aside)
    try:
        os.replace(tmp, destination)
    except BaseException:
        if aside is not None:
            os.replace(aside, destination)
        raise
    if aside is not None:
        remove_tree(aside)


def read_manifest(folder: Path) -> dict[str, Any]:
    """An export folder's ``export.json``.

    Raises:
        UsageError: not an export folder, or a damaged manifest.
    """
    path = Path(folder) / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{folder} is not a clbench export (no {MANIFEST})") from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path} is damaged ({type(exc).__name__})") from None
    if not isinstance(data, dict) or data.get("format") not in FORMATS or not isinstance(data.get("backbone"), str):
        raise UsageError(f"{path} is not a clbench export manifest")
    return data
