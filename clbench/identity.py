"""One run identity: what a run *is*, computed from the resolved options without building a model.

A run is identified by its benchmark (name and version), strategy (name and resolved settings),
backbone spec, seed and KV-cache policy. :func:`run_identity` is a pure function of those; the
runner stores it in ``results.json`` (``identity`` and its short hash ``run_id``), in
``config.json`` and in every checkpoint, and every check that asks "is this run already there?"
(``--resume`` of a complete run, :mod:`clbench.preflight`, ``clbench sweep``) compares identities,
so a benchmark version bump or another setting is never taken for a finished run.

The run folder names the identity too (:func:`run_folder_name`): ``seed-N`` for the default
settings, ``seed-N-kv-<policy>`` under a KV-cache policy, and ``-S-key=value,...`` for the
strategy settings that differ from their defaults (``seed-0-S-lr=0.0005,rank=4``; a hash
``-S-h<12 hex>`` when the readable form would be long or holds characters a folder should not).
Runs with different ``-S`` values thus coexist under one ``--out``. Folders from before this
scheme (every setting in ``seed-N``) are still found: see :func:`legacy_folder`.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from clbench.validation import check_path_name, check_seed

__all__ = ["identity_hash", "legacy_folder", "results_identity", "run_folder_name", "run_identity", "setting_text", "settings_diff", "settings_suffix"]

# Longest readable settings part of a folder name; past it the folder carries a hash instead.
MAX_READABLE = 64
_SAFE = re.compile(r"^[A-Za-z0-9._+=,-]+$")


def settings_diff(config: Any) -> dict[str, Any]:
    """The settings of a strategy config that differ from the config class's defaults (JSON-ready)."""
    default = type(config)().to_dict()
    current = config.to_dict()
    return {k: v for k, v in sorted(current.items()) if json.dumps(v, sort_keys=True) != json.dumps(default.get(k), sort_keys=True)}


def _value_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "+".join(_value_text(v) for v in value)
    if value is None:
        return "none"
    return repr(value) if isinstance(value, float) else str(value)


def setting_text(settings: dict[str, Any]) -> str:
    """``key=value,...`` with sorted keys and values as the resolved config holds them."""
    return ",".join(f"{k}={_value_text(v)}" for k, v in sorted(settings.items()))


def settings_suffix(diff: dict[str, Any]) -> str:
    """``""`` for default settings, else ``-S-key=value,...`` (sorted keys) or ``-S-h<hash>``.

    The suffix is a function of the resolved values, so ``-S lr=5e-4`` and ``-S lr=0.0005``
    name the same folder.
    """
    if not diff:
        return ""
    text = setting_text(diff)
    if len(text) <= MAX_READABLE and _SAFE.match(text):
        return f"-S-{text}"
    return "-S-h" + hashlib.sha256(json.dumps(diff, sort_keys=True).encode()).hexdigest()[:12]


def run_folder_name(seed: int, kv_part: str = "", settings: dict[str, Any] | None = None) -> str:
    """``seed-N`` + the KV-cache part (``-kv-d2o-0.2``, see :func:`clbench.rundir.kv_folder_suffix`)
    + the settings suffix, checked to be one folder name."""
    check_seed(seed)
    return check_path_name(f"seed-{seed}{kv_part}{settings_suffix(settings or {})}", "run folder name")


def legacy_folder(run_dir: Path, settings: dict[str, Any] | None) -> Path | None:
    """The folder a run with non-default ``settings`` had before folders named their settings
    (the same name without ``-S-...``), or ``None`` when the settings are the defaults."""
    suffix = settings_suffix(settings or {})
    if not suffix:
        return None
    return run_dir.with_name(run_dir.name[: -len(suffix)])


def run_identity(benchmark: str, version: int, strategy: str, config: dict[str, Any], backbone: str, seed: int,
                 kv_cache: dict[str, Any] | None = None) -> dict[str, Any]:
    """The identity of one run (JSON-normalised). ``kv_cache`` is the policy's description, or
    ``None`` for the full cache (which leaves the key out, as results written before it did)."""
    identity: dict[str, Any] = {
        "benchmark": {"name": benchmark, "version": int(version)},
        "strategy": {"name": strategy, "config": config},
        "backbone": backbone,
        "seed": int(seed),
    }
    if kv_cache is not None:
        identity["kv_cache"] = kv_cache
    return json.loads(json.dumps(identity))


def identity_hash(identity: dict[str, Any]) -> str:
    """A short stable hash of an identity (``run_id`` in ``results.json``)."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def results_identity(data: dict[str, Any]) -> dict[str, Any]:
    """The identity a results file records; rebuilt from its fields for files written before
    ``identity`` was stored."""
    stored = data.get("identity")
    if isinstance(stored, dict):
        return stored
    kv = data.get("kv_cache")
    kv_desc = {k: v for k, v in kv.items() if k != "initial"} if isinstance(kv, dict) else None
    return run_identity(data["benchmark"]["name"], data["benchmark"]["version"], data["strategy"]["name"], data["strategy"]["config"],
                        data["backbone"]["spec"], data["seed"], kv_desc)


def describe_difference(saved: dict[str, Any], mine: dict[str, Any]) -> list[str]:
    """Top-level identity keys whose values differ (for messages)."""
    return [k for k in sorted(set(saved) | set(mine)) if saved.get(k) != mine.get(k)]

