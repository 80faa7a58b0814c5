"""Per-example score files, bootstrap intervals, paired comparisons and the "did not learn" rule."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from clbench import metrics as formulas
from clbench import uncertainty as u
from clbench.errors import ResultsError
from clbench.example_scores import ExampleScores, matches_matrix


def _binary_run(rng: np.random.Generator, n: int, n_tasks: int = 3, learned: float = 0.9, before: float = 0.5) -> list[np.ndarray]:
    """Per-example 0/1 scores: task c scores `learned` right after it is learned, `before` otherwise."""
    columns = []
    for c in range(n_tasks):
        column = np.empty((n_tasks + 1, n))
        for t in range(n_tasks + 1):
            column[t] = rng.random(n) < (learned if t == c + 1 else before)
        columns.append(column)
    return columns


# ---- the file --------------------------------------------------------------------------------
def test_scores_file_round_trip_is_compact_and_deterministic(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    scores = ExampleScores(n_rows=3, n_columns=2)
    rows = [[(rng.random(1000) < 0.7).astype(np.float32), rng.random(37).astype(np.float32)] for _ in range(3)]
    scores.set_row(0, rows[0])
    assert scores.evaluated() == [True, False, False] and not scores.is_complete()
    scores.set_row(1, rows[1])
    scores.set_row(2, rows[2])
    first, second = tmp_path / "a.npz", tmp_path / "b.npz"
    scores.save(first)
    time.sleep(1.1)  # zip timestamps have 2 s resolution: make sure none is recorded
    scores.save(second)
    assert first.read_bytes() == second.read_bytes()
    assert first.stat().st_size < 3 * 1000 / 8 + 3 * 37 * 2 + 1500  # bits for the 0/1 column, float16 for the other
    back = ExampleScores.load(first)
    assert back.summary()["encodings"] == ["bits", "float16"] and back.sizes() == [1000, 37]
    for t in range(3):
        assert np.array_equal(back.rows[t][0], rows[t][0])  # exact: bit-packed
        assert np.allclose(back.rows[t][1], rows[t][1], atol=5e-4)  # float16
    values = [[float(np.mean(r[0])), float(np.mean(r[1]))] for r in rows]
    assert matches_matrix(back, values)
    assert not matches_matrix(back, [[v[0] + 0.01, v[1]] for v in values[:1]] + values[1:])
    back.keep_rows(1)
    assert back.evaluated() == [True, False, False]
    assert not matches_matrix(back, values)
    with pytest.raises(ValueError, match="differ from earlier rows"):
        back.set_row(1, [np.zeros(999), np.zeros(37)])


def test_scores_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ResultsError, match="no such per-example scores file"):
        ExampleScores.load(tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ResultsError, match=r"bad\.npz: not a readable"):
        ExampleScores.load(bad)
    np.savez(bad, version=np.array([1]))
    with pytest.raises(ResultsError, match="malformed"):
        ExampleScores.load(bad)


# ---- stacked metrics agree with the pure functions ---------------------------------------------
@pytest.mark.parametrize("n_tasks", [1, 2, 5])
def test_stacked_metrics_equal_the_pure_functions(n_tasks: int) -> None:
    stack = np.random.default_rng(n_tasks).random((9, n_tasks + 1, n_tasks))
    for name, fn in u.STACKED.items():
        want = np.array([formulas.METRICS[name](m) for m in stack])
        assert np.allclose(fn(stack), want, equal_nan=True, atol=1e-12), name
    assert set(u.STACKED) == set(u.INTERVAL_METRICS)


# ---- intervals --------------------------------------------------------------------------------
def _width(interval: tuple[float, float] | None) -> float:
    assert interval is not None
    return interval[1] - interval[0]


def test_interval_shrinks_with_more_examples_and_covers_the_estimate() -> None:
    metrics = u.named_metrics(u.INTERVAL_METRICS)
    small = [_binary_run(np.random.default_rng(1), 40)]
    large = [_binary_run(np.random.default_rng(1), 4000)]
    ci_small = u.bootstrap_intervals(small, metrics, replicates=500)
    ci_large = u.bootstrap_intervals(large, metrics, replicates=500)
    for name in ("last_accuracy", "learning_accuracy", "plasticity_gain", "forgetting_chaudhry"):
        assert _width(ci_large[name]) < _width(ci_small[name]) / 4, name  # ~ 1/sqrt(100) = 1/10 in theory
        matrix = np.stack([c.mean(axis=1) for c in large[0]], axis=-1)
        low, high = ci_large[name]  # type: ignore[misc]
        assert low <= formulas.METRICS[name](matrix) <= high, name


def test_fixed_seed_gives_identical_intervals() -> None:
    runs = [_binary_run(np.random.default_rng(2), 60)]
    metrics = u.named_metrics(u.INTERVAL_METRICS)
    assert u.bootstrap_intervals(runs, metrics, seed=7) == u.bootstrap_intervals(runs, metrics, seed=7)
    assert u.bootstrap_intervals(runs, metrics, seed=7) != u.bootstrap_intervals(runs, metrics, seed=8)


def test_constant_scores_give_a_point_interval_and_seeds_are_resampled() -> None:
    """Examples all scoring alike leave no example variance; two seeds at 20 % and 80 % give
    replicate means of 20, 50 or 80 % (drawing seeds with replacement), so the interval is [20, 80]."""
    def constant(value: float) -> list[np.ndarray]:
        return [np.full((2, 10), value)]

    last = u.named_metrics(["last_accuracy"])
    assert u.bootstrap_intervals([constant(1.0)], last)["last_accuracy"] == (1.0, 1.0)
    low, high = u.bootstrap_intervals([constant(0.2), constant(0.8)], last)["last_accuracy"]  # type: ignore[misc]
    assert (low, high) == pytest.approx((0.2, 0.8))
    values = u.replicate_values([[constant(0.2), constant(0.8)]], last, replicates=400)[0, 0]
    assert set(np.round(values, 6)) == {0.2, 0.5, 0.8}


def test_undefined_metric_has_no_interval() -> None:
    one_task = [[np.array([[0.0, 1.0], [1.0, 1.0]])]]
    found = u.bootstrap_intervals(one_task, u.named_metrics(["forgetting_chaudhry", "last_accuracy"]), replicates=50)
    assert found["forgetting_chaudhry"] is None and found["last_accuracy"] is not None


def test_runs_must_score_the_same_examples() -> None:
    with pytest.raises(ValueError, match="same examples"):
        u.replicate_values([[_binary_run(np.random.default_rng(0), 10)], [_binary_run(np.random.default_rng(0), 11)]],
                           u.named_metrics(["last_accuracy"]), replicates=10)


# ---- paired comparison ------------------------------------------------------------------------
def test_a_known_difference_is_significant_and_an_identical_strategy_is_not() -> None:
    metrics = u.named_metrics(["last_accuracy", "learning_accuracy"])
    a = [_binary_run(np.random.default_rng(3), 300, learned=0.9)]
    b = [_binary_run(np.random.default_rng(4), 300, learned=0.6)]
    better = u.paired_comparison(a, b, metrics, replicates=1000)
    assert better["learning_accuracy"].significant  # type: ignore[union-attr]
    assert better["learning_accuracy"].difference == pytest.approx(0.3, abs=0.06)  # type: ignore[union-attr]
    assert better["learning_accuracy"].p_value < 0.01  # type: ignore[union-attr]
    # The last row differs only on the task just learned: (0.9 − 0.6) / 3 = 0.1.
    assert better["last_accuracy"].difference == pytest.approx(0.1, abs=0.04)  # type: ignore[union-attr]
    same = u.paired_comparison(a, a, metrics, replicates=1000)
    for result in same.values():
        assert result is not None and not result.significant
        assert (result.difference, result.low, result.high, result.p_value) == (0.0, 0.0, 0.0, 1.0)
    assert u.paired_comparison(a, b, metrics, seed=3) == u.paired_comparison(a, b, metrics, seed=3)


def test_pairing_the_examples_detects_a_small_consistent_difference() -> None:
    """B is A with 5 % of the examples flipped to wrong: unpaired intervals overlap, the paired one excludes 0."""
    rng = np.random.default_rng(5)
    a = [[(rng.random((2, 400)) < 0.7).astype(float)]]
    flipped = a[0][0].copy()
    flipped[1, np.flatnonzero(flipped[1])[:20]] = 0.0
    b = [[flipped]]
    last = u.named_metrics(["last_accuracy"])
    ci_a, ci_b = u.bootstrap_intervals(a, last)["last_accuracy"], u.bootstrap_intervals(b, last)["last_accuracy"]
    assert ci_a[0] < ci_b[1]  # type: ignore[index]  # the unpaired intervals overlap
    paired = u.paired_comparison(a, b, last)["last_accuracy"]
    assert paired is not None and paired.significant and paired.difference == pytest.approx(0.05)


# ---- "did not learn" --------------------------------------------------------------------------
def test_plasticity_verdict_rule() -> None:
    assert u.plasticity_verdict(0.3, (0.2, 0.4), [0.5, 0.4, 0.0], [(0.3, 0.6), (0.2, 0.5), (-0.1, 0.1)]) == {
        "learned": True, "tasks_learned": 2, "tasks": 3, "judged_by": "95% bootstrap interval"}
    # A positive point gain whose interval reaches 0: no evidence of learning.
    assert not u.plasticity_verdict(0.02, (-0.01, 0.05), [0.02])["learned"]
    assert u.plasticity_verdict(0.02, None, [0.02])["learned"]  # without intervals the point decides
    assert not u.plasticity_verdict(0.0, None, [0.0, 0.0])["learned"]
    assert u.plasticity_verdict(0.0, None, [0.0, 0.0])["judged_by"] == "point estimate"


def test_run_uncertainty_marks_a_frozen_strategy_as_not_learned() -> None:
    rng = np.random.default_rng(6)
    base = (rng.random((1, 200)) < 0.4).astype(float)
    columns = [np.repeat(base, 4, axis=0) for _ in range(3)]  # every row equals row 0 (zero-shot)
    matrix = np.stack([c.mean(axis=1) for c in columns], axis=-1)
    out = u.run_uncertainty(columns, matrix)
    assert out["intervals"]["forgetting_chaudhry"] == [0.0, 0.0]
    assert out["plasticity"]["learned"] is False and out["plasticity"]["tasks_learned"] == 0
    assert out["plasticity"]["rule"] == u.LEARNED_RULE
    learned = u.run_uncertainty(_binary_run(rng, 200), np.stack([c.mean(axis=1) for c in _binary_run(rng, 200)], axis=-1))
    assert learned["plasticity"]["learned"] is True
    no_examples = u.run_uncertainty(None, matrix)
    assert no_examples["intervals"]["last_accuracy"] is None and no_examples["plasticity"]["judged_by"] == "point estimate"


def test_modules_import_without_torch() -> None:
    code = ("import sys\nimport clbench.uncertainty, clbench.example_scores, clbench.budget\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True)
