"""Reports from results files alone: tables checked by hand, paper-style tables, seeds kept apart
from other configurations, byte-identical outputs, clear errors, no torch, and a real browser."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from clbench.errors import ResultsError
from clbench.report import build_report

TASKS = ["a", "b", "c"]
# One hand-made matrix; seeds shift it by +-0.02 so means and stds are known exactly.
BASE = [[0.10, 0.20, 0.30, 0.90], [0.80, 0.25, 0.35, 0.85], [0.60, 0.90, 0.40, 0.80], [0.50, 0.70, 0.95, 0.70]]


def make_results(strategy: str = "lora", seed: int = 0, shift: float = 0.0, *, config: dict[str, Any] | None = None, metrics: list[str] | None = None,
                 tables: list[str] | None = None, version: int = 1, telemetry: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    values = [[round(v + shift, 6) for v in row] for row in BASE]
    return {
        "schema": "clbench.results/1", "status": "complete",
        "benchmark": {"name": "toy", "version": version, "protocol": "task-incremental", "backbone": "mlp:8", "tasks": TASKS,
                      "probes": ["probe"], "metrics": metrics or ["last_accuracy"], "tables": tables or []},
        "strategy": {"name": strategy, "package": "clbench", "version": "0.1.0", "config": config or {"rank": 4}},
        "backbone": {"spec": "mlp:8", "kind": "classic", "parameters": 100, "trainable_parameters": 10},
        "seed": seed, "train": {"epochs": 1}, "environment": {"device": "cpu"},
        "matrix": {"rows": ["init", "after a", "after b", "after c"], "columns": [*TASKS, "probe"],
                   "task_metrics": ["accuracy"] * 4, "values": values},
        "metrics": {}, "probes": {"probe": {"initial": values[0][3], "final": values[-1][3], "delta": round(values[-1][3] - values[0][3], 6)}},
        "tasks": [{"task": t, "train_seconds": 1.0, "eval_seconds": 0.5, "peak_memory_mb": 100.0} for t in TASKS],
        "telemetry": telemetry if telemetry is not None else [{"task": t} for t in TASKS],
    }


def write_runs(root: Path, runs: list[dict[str, Any]]) -> Path:
    for data in runs:
        folder = root / data["benchmark"]["name"] / data["strategy"]["name"] / f"seed-{data['seed']}-{abs(hash(json.dumps(data['strategy']['config'], sort_keys=True))) % 997}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "results.json").write_text(json.dumps(data), encoding="utf-8")
    return root


def three_seeds(strategy: str = "lora", **kwargs: Any) -> list[dict[str, Any]]:
    return [make_results(strategy, seed, shift, **kwargs) for seed, shift in ((0, -0.02), (1, 0.0), (2, 0.02))]


def test_metrics_table_mean_std_over_seeds_by_hand(tmp_path: Path) -> None:
    runs = write_runs(tmp_path / "runs", three_seeds("lora") + three_seeds("finetune", config={"lr": 1e-3}))
    build_report([runs], tmp_path / "out", ["md"])
    report = (tmp_path / "out" / "toy" / "report.md").read_text()
    # Last = mean(0.50, 0.70, 0.95) = 71.67 %; seeds shift by 2 points, so the sample std is 2.00.
    # Chaudhry forgetting = mean(0.80-0.50, 0.90-0.70) = 25 % (shifts cancel: std 0); probe delta 0.70-0.90.
    # Learning acc. = mean(0.80, 0.90, 0.95) = 88.33 (std 2.00); its gain over row 0 = mean(0.70, 0.70, 0.65) = 68.33 (std 0).
    # No per-example scores in these hand-made results: mean ± std, and the point gain decides "learned".
    assert re.search(r"\| lora \| 3 \| 71\.67 ± 2\.00 \| [^|]+ \| 88\.33 ± 2\.00 \| 68\.33 ± 0\.00 \| yes \(3/3 tasks\) \| "
                     r"25\.00 ± 0\.00 \| -25\.00 ± 0\.00 \|", report), report
    assert "Intervals unavailable (mean ± std over seeds shown instead) for: finetune (no per-example scores); lora (no per-example scores)." in report
    assert "| finetune | 3 |" in report and "-20.00 ± 0.00" in report


def test_mtil_table_per_task_columns_by_hand(tmp_path: Path) -> None:
    runs = write_runs(tmp_path / "runs", [make_results(metrics=["mtil_transfer", "mtil_avg", "mtil_last"])])
    build_report([runs], tmp_path / "out", ["md"])
    report = (tmp_path / "out" / "toy" / "report.md").read_text()
    assert "## MTIL-style table" in report
    # Transfer_b = R[1][b] = 25; Transfer_c = mean(R[1][c], R[2][c]) = 37.5; Transfer = 31.25 -> "31.2" at one decimal.
    assert "| lora Transfer | – | 25.0 | 37.5 | 31.2 |" in report
    # Avg_a = mean(0.8, 0.6, 0.5) = 63.3; Last = (50 + 70 + 95) / 3 = 71.7.
    assert "| lora Avg. | 63.3 | 61.7 | 56.7 |" in report and "| lora Last | 50.0 | 70.0 | 95.0 | 71.7 |" in report
    assert "| lora Learning | 80.0 | 90.0 | 95.0 | 88.3 |" in report  # R[i][i], beside the rows it is read against


def test_trace_table_when_declared(tmp_path: Path) -> None:
    runs = write_runs(tmp_path / "runs", [make_results(tables=["trace"])])
    build_report([runs], tmp_path / "out", ["md"])
    report = (tmp_path / "out" / "toy" / "report.md").read_text()
    assert "## TRACE-style table" in report and "| lora | 1 | 71.67 | 88.33 | yes (3/3 tasks) | -25.00 | 25.00 |" in report


def test_other_configurations_are_never_averaged_and_the_difference_is_named(tmp_path: Path) -> None:
    runs = write_runs(tmp_path / "runs", [make_results(config={"rank": 4}), make_results(config={"rank": 8}, seed=1, shift=0.01)])
    build_report([runs], tmp_path / "out", ["md"])
    report = (tmp_path / "out" / "toy" / "report.md").read_text()
    labels = re.findall(r"\| (lora rank=\d) \| 1 \|", report)  # labelled by the settings that differ
    assert sorted(labels) == ["lora rank=4", "lora rank=8"] and "they differ in config.rank" in report
    assert (tmp_path / "out" / "toy" / "matrix-lora-rank-4.png").exists() or (tmp_path / "out" / "toy" / "matrix-lora-rank-4.svg").exists()
    other_backbone = make_results(seed=1, shift=0.01)
    other_backbone["backbone"]["spec"] = "mlp:99"
    other = write_runs(tmp_path / "runs2", [make_results(), other_backbone])
    build_report([other], tmp_path / "out2", ["md"])
    report = (tmp_path / "out2" / "toy" / "report.md").read_text()
    assert len(re.findall(r"\| (lora@[0-9a-f]{8}) \| 1 \|", report)) == 2  # not settings alone: the hash tells them apart


def test_benchmark_versions_are_reported_separately(tmp_path: Path) -> None:
    runs = write_runs(tmp_path / "runs", [make_results(), make_results(version=2, seed=1)])
    build_report([runs], tmp_path / "out", ["md"])
    report = (tmp_path / "out" / "toy" / "report.md").read_text()
    assert "v2 are reported separately" in report or "v1 are reported separately" in report


def test_same_inputs_give_byte_identical_outputs(tmp_path: Path) -> None:
    telemetry = [{"task": t, "bank_size": 4 * (i + 1), "per_module": {f"m{j}": i + j for j in range(5)},
                  "routing_matrix": [[0.5, 0.5], [0.1, 0.9]], "routing_rows": ["a", "b"], "routing_columns": ["x", "y"]} for i, t in enumerate(TASKS)]
    runs = write_runs(tmp_path / "runs", three_seeds(telemetry=telemetry))
    first = build_report([runs], tmp_path / "one")
    second = build_report([runs], tmp_path / "two")
    assert [p.name for p in first] == [p.name for p in second]
    names = {p.name for p in first}
    assert {"report.md", "report.html", "forgetting-curves.svg", "average-accuracy.png", "matrix-lora.png"} <= names
    assert {"telemetry-bank-size.png", "telemetry-lora-per-module.png", "telemetry-lora-routing-matrix.png"} <= names
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda d: d.update(status="running"), "run is not complete"),
    (lambda d: d.update(schema="other/9"), "is not 'clbench.results/1'"),
    (lambda d: d["matrix"]["values"].pop(), "field 'matrix.values' must have 4 rows"),
])
def test_bad_results_files_name_the_file_and_the_problem(tmp_path: Path, mutate: Any, message: str, cli: Any) -> None:
    data = make_results()
    mutate(data)
    runs = write_runs(tmp_path / "runs", [data])
    with pytest.raises(ResultsError, match=re.escape(message)):
        build_report([runs], tmp_path / "out")
    status, _, err = cli("report", runs, "--out", tmp_path / "out")
    assert status == 2 and err.count("\n") == 1 and "results.json" in err and message in err


def test_unreadable_and_incompatible_files(tmp_path: Path) -> None:
    broken = tmp_path / "broken" / "results.json"
    broken.parent.mkdir()
    broken.write_text("{not json", encoding="utf-8")
    with pytest.raises(ResultsError, match="not a readable results file"):
        build_report([broken], tmp_path / "out")
    other = make_results(seed=1)
    other["benchmark"]["tasks"] = ["a", "b", "z"]
    other["matrix"]["columns"] = ["a", "b", "z", "probe"]
    runs = write_runs(tmp_path / "runs", [make_results(), other])
    with pytest.raises(ResultsError, match="changed without a version bump"):
        build_report([runs], tmp_path / "out")
    with pytest.raises(Exception, match="unknown report format"):
        build_report([runs], tmp_path / "out", ["pdf"])


def test_reports_never_import_torch(tmp_path: Path) -> None:
    runs = write_runs(tmp_path / "runs", three_seeds())
    code = ("import sys; from clbench.cli import main; status = main(['report', sys.argv[1], '--out', sys.argv[2]]); "
            "assert status == 0; assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code, str(runs), str(tmp_path / "out")], check=True, capture_output=True)


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(_chromium() is None, reason="needs Debian chromium (.ci/run installs it)")
def test_html_report_loads_in_headless_chromium_and_every_figure_renders(tmp_path: Path) -> None:
    telemetry = [{"task": t, "bank_size": i, "per_module": {f"m{j}": j for j in range(4)}} for i, t in enumerate(TASKS)]
    runs = write_runs(tmp_path / "runs", three_seeds(telemetry=telemetry) + three_seeds("finetune", config={"lr": 1.0}))
    build_report([runs], tmp_path / "out", ["html"])
    page = tmp_path / "out" / "toy" / "report.html"
    html = page.read_text()
    assert "src=\"http" not in html and "href=\"http" not in html  # self-contained
    n_figures = html.count("<img ")
    assert n_figures >= 6
    result = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                             "--disable-background-networking", "--disable-component-update", "--disable-sync",
                             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
                            capture_output=True, text=True, timeout=120)
    body = re.search(r"<body[^>]*>", result.stdout)
    assert body is not None, result.stderr[-2000:]
    assert f'data-figures="{n_figures}/{n_figures}"' in body.group(0), body.group(0)
    assert "data-errors" not in body.group(0)


def test_report_of_a_real_run(cli: Any, small_digits: Path, tmp_path: Path) -> None:
    status, _, err = cli("run", small_digits, "-s", "lora", "--seed", "0", "--out", tmp_path / "runs", "--no-progress")
    assert status == 0, err
    data = json.loads(next((tmp_path / "runs").rglob("results.json")).read_text())
    assert data["telemetry"] and "adapter_update_norm" in data["telemetry"][0]
    status, out, err = cli("report", tmp_path / "runs", "--out", tmp_path / "out", "--format", "md")
    assert status == 0, err
    folder = tmp_path / "out" / "digits-small"
    assert (folder / "report.md").exists() and not (folder / "report.html").exists()
    assert (folder / "telemetry-adapter-update-norm.png").exists()


@pytest.mark.parametrize("name", ["../escaped-report", "/tmp/absolute-report", "..", "a/../../b"])
def test_benchmark_names_from_results_files_cannot_escape_out(tmp_path: Path, name: str) -> None:
    data = make_results()
    data["benchmark"]["name"] = name
    results = tmp_path / "in" / "results.json"
    results.parent.mkdir()
    results.write_text(json.dumps(data), encoding="utf-8")
    out = tmp_path / "deep" / "out"
    written = build_report([results], out)
    assert written and all(out.resolve() in p.resolve().parents for p in written)
    assert {p.name for p in tmp_path.iterdir()} == {"in", "deep"} and not Path("/tmp/absolute-report").exists()
    assert len([p for p in out.iterdir()]) == 1
