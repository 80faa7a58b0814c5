"""Loading, checking and grouping results files for reports (numpy only, never torch).

Runs are grouped by benchmark name and version, then by strategy *configuration*: runs of one
strategy whose resolved settings, backbone or training settings differ get distinct labels
(``name@hash``) and are never averaged together; the report lists what differs between them.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clbench import metrics as formulas
from clbench.errors import ResultsError
from clbench.results import RESULTS_FILE, load_results, trained_matrix


def find_results(inputs: Sequence[Path]) -> list[Path]:
    """Results files named by ``inputs`` (files, run directories, or folders searched recursively).

    The search skips dot-folders: ``.seed-N.previous`` holds a run an unfinished ``--overwrite``
    is replacing (see :mod:`clbench.rundir`), which must not be reported beside its successor.
    """
    found: list[Path] = []
    for path in inputs:
        if path.is_file():
            found.append(path)
        elif (path / RESULTS_FILE).is_file():
            found.append(path / RESULTS_FILE)
        elif path.is_dir():
            found.extend(p for p in sorted(path.rglob(RESULTS_FILE)) if not any(part.startswith(".") for part in p.relative_to(path).parts))
        else:
            raise ResultsError(f"{path}: no such file or directory")
    if not found:
        raise ResultsError(f"no {RESULTS_FILE} found under {', '.join(map(str, inputs))}")
    return sorted(set(found))


def _identity(results: dict[str, Any]) -> dict[str, Any]:
    """What makes two runs of one strategy comparable (everything but the seed)."""
    identity = {"config": results["strategy"]["config"], "backbone": results["backbone"]["spec"], "train": results.get("train"),
                "package": f"{results['strategy'].get('package')} {results['strategy'].get('version')}"}
    if results.get("kv_cache"):  # runs evaluated under a KV-cache policy (absent: the full cache)
        identity["kv_cache"] = results["kv_cache"].get("policy")
    return identity


def _config_key(results: dict[str, Any]) -> str:
    blob = json.dumps(_identity(results), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:8]


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): value}


def differing_settings(runs: Sequence[dict[str, Any]]) -> list[str]:
    """Dotted setting names whose values differ between ``runs`` (seed excluded)."""
    flats = [_flatten(_identity(r)) for r in runs]
    keys = sorted(set().union(*flats))
    return [k for k in keys if len({json.dumps(f.get(k), sort_keys=True) for f in flats}) > 1]


def _setting_labels(runs: Sequence[dict[str, Any]]) -> dict[str, str]:
    """``{config key: "lora lr=0.001,rank=4"}`` when the configurations of one strategy differ only
    in strategy settings (and the training settings those imply); ``{}`` otherwise, and the
    labels stay ``name@hash``."""
    from clbench.identity import setting_text

    differing = differing_settings(runs)
    config_keys = [k.removeprefix("config.") for k in differing if k.startswith("config.")]
    if not config_keys or any(not k.startswith(("config.", "train.")) or (k.startswith("train.") and k[6:] not in config_keys) for k in differing):
        return {}
    def shown(value: Any) -> Any:
        return "default" if value is None else value  # None: the benchmark's own value of a training setting

    labels = {_config_key(r): f"{r['strategy']['name']} " + setting_text({k: shown(_flatten(r['strategy']['config']).get(k)) for k in config_keys})
              for r in runs}
    return labels if len(set(labels.values())) == len(labels) else {}


@dataclass
class StrategyRuns:
    """Every seed of one strategy configuration on one benchmark."""

    label: str
    runs: list[dict[str, Any]]

    @property
    def seeds(self) -> list[int]:
        return sorted(int(r["seed"]) for r in self.runs)

    def matrices(self) -> list[np.ndarray]:
        """Each run's full matrix (all columns, probes included), NaN for missing entries."""
        return [np.array([[np.nan if v is None else v for v in row] for row in r["matrix"]["values"]], dtype=float) for r in self.runs]

    def mean_matrix(self) -> np.ndarray:
        return np.mean(self.matrices(), axis=0)

    def metric_values(self, name: str) -> list[float]:
        """The metric per seed, computed from each run's trained-task matrix."""
        return [formulas.compute_metrics(trained_matrix(r), [name])[name] for r in self.runs]


@dataclass
class BenchmarkGroup:
    """All runs of one benchmark version, by strategy label (sorted)."""

    name: str
    version: int
    strategies: dict[str, StrategyRuns]
    notes: list[str]
    evaluations: list[dict[str, Any]] = field(default_factory=list)  # clbench eval rows (kind "eval"), no training

    @property
    def first(self) -> dict[str, Any]:
        return next(iter(self.strategies.values())).runs[0]


def _check_compatible(file: str, data: dict[str, Any], reference: dict[str, Any]) -> None:
    """Runs of one benchmark version must share tasks and columns."""
    if data["matrix"]["columns"] != reference["matrix"]["columns"]:
        raise ResultsError(f"{file}: benchmark {data['benchmark']['name']} v{data['benchmark']['version']} has columns "
                           f"{data['matrix']['columns']} but {reference['_path']} has {reference['matrix']['columns']}; "
                           "the benchmark changed without a version bump")


def load_groups(inputs: Sequence[Path]) -> list[BenchmarkGroup]:
    """Complete runs grouped by benchmark version and strategy configuration.

    Raises:
        ResultsError: an unreadable, partial or incompatible results file (naming it).
    """
    loaded = []
    for file in find_results(inputs):
        data = load_results(file)
        if data["status"] != "complete":
            raise ResultsError(f"{file}: run is not complete (status {data['status']!r}); finish it with clbench run ... --resume")
        loaded.append(data)
    by_bench: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    evaluations: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for data in loaded:
        key = (data["benchmark"]["name"], int(data["benchmark"]["version"]))
        (evaluations if data.get("kind") == "eval" else by_bench)[key].append(data)
    for key in evaluations:
        by_bench.setdefault(key, [])
    versions: dict[str, list[int]] = defaultdict(list)
    for name, version in by_bench:
        versions[name].append(version)
    groups = []
    for (name, version), runs in sorted(by_bench.items()):
        for data in runs + evaluations[(name, version)]:
            _check_compatible(data["_path"], data, (runs or evaluations[(name, version)])[0])
        notes = []
        if len(versions[name]) > 1:
            others = ", ".join(f"v{v}" for v in sorted(versions[name]) if v != version)
            notes.append(f"Runs of {name} {others} are reported separately: benchmark versions differ in protocol.")
        by_name: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for data in runs:
            by_name[data["strategy"]["name"]].append(data)
        strategies: dict[str, StrategyRuns] = {}
        for strategy, same in sorted(by_name.items()):
            keys = sorted({_config_key(r) for r in same})
            named = _setting_labels(same) if len(keys) > 1 else {}
            if len(keys) > 1:
                notes.append(f"{strategy} ran with {len(keys)} configurations, reported as "
                             f"{', '.join(sorted(named.get(k, f'{strategy}@{k}') for k in keys))}; they differ in {', '.join(differing_settings(same))}.")
            for key in sorted(keys, key=lambda k: named.get(k, k)):
                label = strategy if len(keys) == 1 else named.get(key, f"{strategy}@{key}")
                strategies[label] = StrategyRuns(label, sorted((r for r in same if _config_key(r) == key), key=lambda r: int(r["seed"])))
        backbones = sorted({r["backbone"]["spec"] for r in runs})
        if len(backbones) > 1:
            notes.append(f"Strategies ran on different backbones ({', '.join(backbones)}); compare rows with care.")
        groups.append(BenchmarkGroup(name, version, strategies, notes, sorted(evaluations[(name, version)], key=lambda r: r["_path"])))
    return groups


def mean_std(values: Sequence[float | None], scale: float = 100.0, digits: int = 2) -> str:
    """``mean ± sample std`` in percent (just the mean for one value, ``–`` for none)."""
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return "–"
    mean = scale * float(np.mean(finite))
    if len(finite) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {scale * float(np.std(finite, ddof=1)):.{digits}f}"
