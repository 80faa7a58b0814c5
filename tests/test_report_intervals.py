"""Reports with per-example scores: bootstrap intervals, "did not learn", paired comparisons, budgets."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from clbench.errors import UsageError
from clbench.example_scores import ExampleScores
from clbench.report import build_report

TASKS = ["a", "b", "c"]
N = 400  # test examples per task


def _scores(rng: np.random.Generator, learned: float, before: float = 0.1, kept: float | None = None) -> list[np.ndarray]:
    """0/1 scores (T+1, N) per task: `before` until learned, `learned` right after, then `kept` (default: learned)."""
    columns = []
    for c in range(len(TASKS)):
        column = np.empty((len(TASKS) + 1, N), dtype=np.float32)
        for t in range(len(TASKS) + 1):
            p = before if t <= c else (learned if t == c + 1 else (learned if kept is None else kept))
            column[t] = rng.random(N) < p
        columns.append(column)
    return columns


def write_run(root: Path, strategy: str, seed: int, columns: list[np.ndarray] | None, *, values: list[list[float]] | None = None,
              budget: dict[str, Any] | None = None) -> None:
    """A complete results.json (and examples.npz unless columns is None) whose matrix is the per-example means."""
    folder = root / "toy" / strategy / f"seed-{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    if columns is not None:
        scores = ExampleScores(len(TASKS) + 1, len(TASKS))
        for t in range(len(TASKS) + 1):
            scores.set_row(t, [c[t] for c in columns])
        scores.save(folder / "examples.npz")
        values = [[float(c[t].mean()) for c in columns] for t in range(len(TASKS) + 1)]
    data = {
        "schema": "clbench.results/1", "status": "complete",
        "benchmark": {"name": "toy", "version": 1, "protocol": "class-incremental", "backbone": "mlp:8", "tasks": TASKS, "probes": [],
                      "metrics": ["last_accuracy"], "tables": ["trace"]},
        "strategy": {"name": strategy, "package": "clbench", "version": "0.1.0", "config": {}},
        "backbone": {"spec": "mlp:8", "kind": "classic", "parameters": 100, "trainable_parameters": 10},
        "seed": seed, "train": {"epochs": 2, "batch_size": 16, "lr": 0.01, "optimizer": "adamw", "scheduler": "constant"},
        "environment": {"device": "cpu"},
        "matrix": {"rows": ["init", "after a", "after b", "after c"], "columns": TASKS, "task_metrics": ["accuracy"] * 3, "values": values},
        "metrics": {}, "probes": {},
        "tasks": [{"task": t, "train_seconds": 1.0, "eval_seconds": 0.5, "peak_memory_mb": 100.0, "steps": 26} for t in TASKS],
        "telemetry": [{"task": t} for t in TASKS],
    }
    if budget is not None:
        data["budget"] = budget
    (folder / "results.json").write_text(json.dumps(data), encoding="utf-8")


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    """Two seeds each of: a strategy that learns and keeps, one that learns and forgets, one that never learns."""
    root = tmp_path / "runs"
    rng = np.random.default_rng(0)
    for seed in (0, 1):
        write_run(root, "keeper", seed, _scores(rng, learned=0.9))
        write_run(root, "forgetter", seed, _scores(rng, learned=0.9, kept=0.3))
        write_run(root, "frozen", seed, _scores(rng, learned=0.1))  # every row scores like row 0
    return root


def _row(report: str, label: str) -> list[str]:
    line = next(line for line in report.splitlines() if line.startswith(f"| {label} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_intervals_did_not_learn_and_the_overview_figure(runs: Path, tmp_path: Path) -> None:
    written = build_report([runs], tmp_path / "out")
    report = (tmp_path / "out" / "toy" / "report.md").read_text()
    header = _row(report, "strategy")
    keeper, frozen = dict(zip(header, _row(report, "keeper"), strict=True)), dict(zip(header, _row(report, "frozen"), strict=True))
    low, high = map(float, re.fullmatch(r"[\d.]+ \[([\d.]+), ([\d.]+)\]", keeper["Last"]).groups())  # type: ignore[union-attr]
    assert low < 90 < high and high - low < 6  # 2 seeds x 3 tasks x 400 examples at p = 0.9
    assert keeper["learned"] == "yes (3/3 tasks)"
    # The frozen strategy forgets nothing because it learned nothing: marked, and its forgetting flagged.
    assert frozen["learned"] == "did not learn (0/3)"
    assert frozen["Forgetting"].endswith("†") and frozen["BWT"].endswith("†") and not keeper["Forgetting"].endswith("†")
    assert "Did not learn: frozen. The 95% bootstrap interval of the gain over row 0" in report
    assert "Intervals unavailable" not in report
    assert "![Each strategy's learning accuracy (plasticity) against its forgetting" in report
    assert (tmp_path / "out" / "toy" / "plasticity-overview.png") in written
    trace = _row(report.split("## TRACE-style table")[1], "frozen")  # strategy, seeds, OP, Learning acc., learned, BWT, −BWT
    assert trace[4] == "did not learn (0/3)" and trace[5].endswith("†") and trace[6].endswith("†")


def test_compare_marks_significant_differences_only(runs: Path, tmp_path: Path) -> None:
    build_report([runs], tmp_path / "out", ["md"], compare="keeper")
    report = (tmp_path / "out" / "toy" / "report.md").read_text()
    assert "## Paired comparison against keeper" in report
    header = _row(report.split("## Paired comparison against keeper")[1], "strategy")
    forgetter = dict(zip(header, _row(report.split("## Paired comparison against keeper")[1], "forgetter"), strict=True))
    # Same learning (0.9 right after each task): no significant difference; forgetting 0.6 higher: significant.
    assert not forgetter["Δ Learning acc."].split(" p=")[0].endswith("*")
    assert 50 < float(forgetter["Δ Forgetting"].split(" ")[0]) < 65 and forgetter["Δ Forgetting"].split(" p=")[0].endswith("*")
    assert forgetter["Δ Last"].startswith("-") and "*" in forgetter["Δ Last"]
    assert "| keeper |" not in report.split("## Paired comparison against keeper")[1].split("\n\n|")[0]


def test_compare_against_itself_is_never_significant(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    columns = _scores(np.random.default_rng(1), learned=0.8, kept=0.5)
    write_run(root, "same-a", 0, columns)
    write_run(root, "same-b", 0, columns)
    build_report([root], tmp_path / "out", ["md"], compare="same-a")
    section = (tmp_path / "out" / "toy" / "report.md").read_text().split("## Paired comparison against same-a")[1]
    cells = _row(section, "same-b")[1:]
    assert cells and all(c == "+0.0 [+0.0, +0.0] p=1.000" for c in cells), cells


def test_compare_unknown_strategy_fails_before_writing(runs: Path, tmp_path: Path, cli: Any) -> None:
    with pytest.raises(UsageError, match="--compare 'nope': no such strategy in these results; strategies: forgetter, frozen, keeper"):
        build_report([runs], tmp_path / "out", compare="nope")
    assert not (tmp_path / "out").exists()
    status, _, err = cli("report", runs, "--out", tmp_path / "out", "--compare", "nope")
    assert status == 2 and err.count("\n") == 1
    status, out, err = cli("report", runs, "--out", tmp_path / "out", "--compare", "keeper", "--format", "md")
    assert status == 0 and "report.md" in out, err


def test_old_results_without_per_example_scores_still_load(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    rng = np.random.default_rng(2)
    write_run(root, "new", 0, _scores(rng, learned=0.9))
    old = [[0.1, 0.1, 0.1], [0.9, 0.1, 0.1], [0.8, 0.9, 0.1], [0.7, 0.8, 0.9]]
    write_run(root, "old", 0, None, values=old)
    write_run(root, "stale", 0, _scores(rng, learned=0.9))
    results = root / "toy" / "stale" / "seed-0" / "results.json"
    data = json.loads(results.read_text())
    data["matrix"]["values"][1][0] = 0.5  # the matrix no longer matches its examples.npz
    results.write_text(json.dumps(data))
    build_report([root], tmp_path / "out", ["md"], compare="new")
    report = (tmp_path / "out" / "toy" / "report.md").read_text()
    assert _row(report, "old")[2] == "80.00"  # one seed, no interval: the mean alone
    assert "[" in _row(report, "new")[2]
    assert re.search(r"Intervals unavailable \(mean ± std over seeds shown instead\) for: old \(no per-example scores\); "
                     r"stale \(.*examples\.npz does not match its results\.json\)", report), report
    section = report.split("## Paired comparison against new")[1]
    assert _row(section, "old")[1:] == ["n/a"] * 5


def test_reports_with_intervals_are_byte_identical(runs: Path, tmp_path: Path) -> None:
    first = build_report([runs], tmp_path / "one", compare="keeper")
    second = build_report([runs], tmp_path / "two", compare="keeper")
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name


def test_budget_table_states_steps_batch_and_lr(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    budget = {"epochs": 2, "iterations": None, "batch_size": 16, "grad_accum": 1, "lr": 0.005, "optimizer": "adamw", "scheduler": "cosine",
              "steps_per_task": [26, 26, 27], "strategy_overrides": {"lr": {"benchmark": 0.01, "run": 0.005}}}
    write_run(root, "tuned", 0, _scores(np.random.default_rng(3), learned=0.9), budget=budget)
    write_run(root, "legacy", 0, _scores(np.random.default_rng(4), learned=0.9))  # no budget record: rebuilt from train and tasks
    build_report([root], tmp_path / "out", ["md"])
    report = (tmp_path / "out" / "toy" / "report.md").read_text().split("## Budget")[1]
    assert "| tuned | 26, 26, 27 | 16 | 0.005 | adamw | cosine | 2 epochs | lr 0.01→0.005 |" in report
    assert "| legacy | 26, 26, 26 | 16 | 0.01 | adamw | constant | 2 epochs | none |" in report
