"""Reports from results files alone: forgetting curves, accuracy heat maps, a Markdown summary.

``build_report(inputs, out)`` (and ``clbench report``) reads ``results.json`` files — given
directly, as run directories, or found under folders — groups them by benchmark and strategy
configuration, averages seeds, and writes figures plus ``report.md`` under ``out/<benchmark>/``.
It never imports torch and never re-runs anything.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from clbench import metrics as formulas
from clbench.errors import ResultsError
from clbench.results import RESULTS_FILE, load_results, trained_matrix

HEADLINE = ("last_accuracy", "average_incremental_accuracy", "forgetting_chaudhry", "bwt", "fwt")


def find_results(inputs: Sequence[Path]) -> list[Path]:
    """Results files named by ``inputs`` (files, run directories, or folders searched recursively)."""
    found: list[Path] = []
    for path in inputs:
        if path.is_file():
            found.append(path)
        elif (path / RESULTS_FILE).is_file():
            found.append(path / RESULTS_FILE)
        elif path.is_dir():
            found.extend(sorted(path.rglob(RESULTS_FILE)))
        else:
            raise ResultsError(f"{path}: no such file or directory")
    if not found:
        raise ResultsError(f"no {RESULTS_FILE} found under {', '.join(map(str, inputs))}")
    return sorted(set(found))


def _config_key(results: dict[str, Any]) -> str:
    blob = json.dumps({"config": results["strategy"]["config"], "backbone": results["backbone"]["spec"], "train": results.get("train")}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:8]


def load_runs(inputs: Sequence[Path]) -> dict[tuple[str, int], dict[str, list[dict[str, Any]]]]:
    """Complete runs grouped by (benchmark, version) then by strategy label.

    Runs of one strategy with different settings get distinct labels (``name@hash``) so they
    are never averaged together. Incomplete runs are an error naming the file.
    """
    groups: dict[tuple[str, int], dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    configs: dict[tuple[tuple[str, int], str], set[str]] = defaultdict(set)
    loaded = []
    for file in find_results(inputs):
        data = load_results(file)
        if data["status"] != "complete":
            raise ResultsError(f"{file}: run is not complete (status {data['status']!r}); finish it with clbench run ... --resume")
        loaded.append(data)
        configs[((data["benchmark"]["name"], data["benchmark"]["version"]), data["strategy"]["name"])].add(_config_key(data))
    for data in loaded:
        bench = (data["benchmark"]["name"], data["benchmark"]["version"])
        name = data["strategy"]["name"]
        label = name if len(configs[(bench, name)]) == 1 else f"{name}@{_config_key(data)}"
        groups[bench][label].append(data)
    return groups


def _mean_std(values: list[float | None]) -> str:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return "–"
    mean = 100 * float(np.mean(finite))
    return f"{mean:.2f} ± {100 * float(np.std(finite, ddof=1)):.2f}" if len(finite) > 1 else f"{mean:.2f}"


def _mean_matrix(runs: list[dict[str, Any]]) -> np.ndarray:
    full = [np.array([[np.nan if v is None else v for v in row] for row in r["matrix"]["values"]], dtype=float) for r in runs]
    return np.mean(full, axis=0)


def _benchmark_report(name: str, version: int, strategies: dict[str, list[dict[str, Any]]], folder: Path) -> list[Path]:
    from clbench.report.figures import accuracy_heatmap, forgetting_curves

    first = next(iter(strategies.values()))[0]
    columns = first["matrix"]["columns"]
    rows = first["matrix"]["rows"]
    n_tasks = len(first["benchmark"]["tasks"])
    labels = sorted(strategies)
    written = forgetting_curves([(label, _mean_matrix(strategies[label])) for label in labels], columns, n_tasks,
                                folder / "forgetting-curves", f"{name} v{version}: accuracy on each task as tasks are learned")
    lines = [f"# {name} (benchmark version {version})", "", f"Protocol: {first['benchmark']['protocol']}; backbone: `{first['backbone']['spec']}`.",
             "Scores in %, mean ± sample std over seeds. Metrics over the trained tasks; formulas in `clbench.metrics`.", "",
             "| strategy | seeds | " + " | ".join(HEADLINE) + " | probes Δ |", "|---" * (len(HEADLINE) + 3) + "|"]
    for label in labels:
        runs = strategies[label]
        cells = [_mean_std([formulas.compute_metrics(trained_matrix(r), [m])[m] for r in runs]) for m in HEADLINE]
        probes = ", ".join(f"{p}: {_mean_std([r['probes'][p]['delta'] for r in runs])}" for p in first["benchmark"].get("probes", [])) or "–"
        lines.append(f"| {label} | {len(runs)} | " + " | ".join(cells) + f" | {probes} |")
    lines += ["", "![forgetting curves](forgetting-curves.png)", ""]
    for label in labels:
        slug = label.replace("@", "-").replace("/", "-")
        written += accuracy_heatmap(_mean_matrix(strategies[label]), rows, columns, folder / f"matrix-{slug}", f"{name}: {label} (mean of {len(strategies[label])} seed(s))")
        seeds = ", ".join(str(r["seed"]) for r in sorted(strategies[label], key=lambda r: r["seed"]))
        run = strategies[label][0]
        settings = {k: v for k, v in run["strategy"]["config"].items() if v is not None and k not in run.get("train", {})}
        training = ", ".join(f"{k}={v}" for k, v in sorted(run.get("train", {}).items()))
        lines += [f"## {label}", "", f"Seeds {seeds}; strategy settings `{json.dumps(settings, sort_keys=True)}`; training: {training}.", "",
                  f"![accuracy matrix of {label}](matrix-{slug}.png)", ""]
    report = folder / "report.md"
    report.write_text("\n".join(lines), encoding="utf-8")
    return [*written, report]


def build_report(inputs: Sequence[Path | str], out: Path | str = Path("reports")) -> list[Path]:
    """Write figures and ``report.md`` for every benchmark found in ``inputs``; returns the files."""
    groups = load_runs([Path(p) for p in inputs])
    written = []
    for (name, version), strategies in sorted(groups.items()):
        written += _benchmark_report(name, version, strategies, Path(out) / name)
    return written
