"""Tests for clbench.metrics: hand arithmetic, published ZSCL/MTIL matrices, and Avalanche."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from clbench.metrics import (
    HIGHER_IS_BETTER,
    METRICS,
    accuracy_after_step,
    accuracy_curve,
    average_incremental_accuracy,
    bwt,
    complete_rows,
    compute_metrics,
    forgetting_chaudhry,
    forgetting_first_minus_last,
    forgetting_max_clipped,
    fwt,
    last_accuracy,
    learning_accuracy,
    micro_accuracy_after_step,
    mtil_avg,
    mtil_last,
    mtil_per_task,
    mtil_transfer,
    plasticity_gain,
    plasticity_gains,
    transfer_row_mean_mammoth,
)

# ---------------------------------------------------------------------------------------------
# Hand-computed 3-task matrix. Rows: t = 0 (before training), 1, 2, 3; columns: tasks 1, 2, 3.
# Chosen so that task 1 *improves* after task 2 (85 > 80: Chaudhry's max differs from the
# diagonal) and task 2 ends *above* every earlier value (95 > 90: the clipped variant differs).
R3 = [
    [10.0, 20.0, 35.0],  # row 0: b_i
    [80.0, 40.0, 35.0],  # after task 1
    [85.0, 90.0, 50.0],  # after task 2
    [70.0, 95.0, 60.0],  # after task 3
]
HAND = {
    # A_1 = 80; A_2 = (85+90)/2 = 87.5; A_3 = (70+95+60)/3 = 75
    "last_accuracy": 75.0,
    # (80 + 87.5 + 75)/3 = 242.5/3
    "average_incremental_accuracy": 242.5 / 3,
    # i=1: max(80, 85) - 70 = 15; i=2: max(90) - 95 = -5  -> (15 - 5)/2 = 5
    "forgetting_chaudhry": 5.0,
    # i=1: 80 - 70 = 10; i=2: 90 - 95 = -5  -> 5/2 = 2.5
    "forgetting_first_minus_last": 2.5,
    # i=1: max(80, 85, 70) - 70 = 15; i=2: max(90, 95) - 95 = 0  -> 15/2 = 7.5
    "forgetting_max_clipped": 7.5,
    # i=1: 70 - 80 = -10; i=2: 95 - 90 = 5  -> -5/2 = -2.5
    "bwt": -2.5,
    # i=2: R[1][2] - b_2 = 40 - 20 = 20; i=3: R[2][3] - b_3 = 50 - 35 = 15  -> 35/2 = 17.5
    "fwt": 17.5,
    # column 2: rows t<2 -> 40; column 3: rows 1,2 -> (35+50)/2 = 42.5  -> (40+42.5)/2 = 41.25
    "mtil_transfer": 41.25,
    # columns over rows 1..3: (80+85+70)/3 = 235/3, (40+90+95)/3 = 75, (35+50+60)/3 = 145/3
    # -> (235/3 + 75 + 145/3)/3 = 605/9
    "mtil_avg": 605 / 9,
    # (70+95+60)/3 = 75
    "mtil_last": 75.0,
    # row 1: (40+35)/2 = 37.5; row 2: 50  -> (37.5+50)/2 = 43.75  (not 41.25: by row, not column)
    "transfer_row_mean_mammoth": 43.75,
    # diagonal 80, 90, 60 -> 230/3
    "learning_accuracy": 230 / 3,
    # gains 80-10 = 70, 90-20 = 70, 60-35 = 25 -> 165/3 = 55
    "plasticity_gain": 55.0,
}
_FUNCS = {
    "last_accuracy": last_accuracy,
    "average_incremental_accuracy": average_incremental_accuracy,
    "forgetting_chaudhry": forgetting_chaudhry,
    "forgetting_first_minus_last": forgetting_first_minus_last,
    "forgetting_max_clipped": forgetting_max_clipped,
    "bwt": bwt,
    "fwt": fwt,
    "mtil_transfer": mtil_transfer,
    "mtil_avg": mtil_avg,
    "mtil_last": mtil_last,
    "transfer_row_mean_mammoth": transfer_row_mean_mammoth,
    "learning_accuracy": learning_accuracy,
    "plasticity_gain": plasticity_gain,
}


@pytest.mark.parametrize("name", sorted(HAND))
def test_hand_computed_3_tasks(name):
    assert _FUNCS[name](R3) == pytest.approx(HAND[name], abs=1e-12)


def test_accuracy_curve_and_steps():
    assert accuracy_curve(R3) == pytest.approx([80.0, 87.5, 75.0], abs=1e-12)
    assert accuracy_after_step(R3, 2) == pytest.approx(87.5)
    assert accuracy_after_step(np.array(R3), np.int64(1)) == pytest.approx(80.0)


def test_micro_accuracy_weights_by_test_set_size():
    sizes = [100, 300, 50]
    # t=2: (100*85 + 300*90)/400 = 35500/400 = 88.75 (macro A_2 is 87.5)
    assert micro_accuracy_after_step(R3, 2, sizes) == pytest.approx(88.75)
    # t=3: (100*70 + 300*95 + 50*60)/450 = 38500/450
    assert micro_accuracy_after_step(R3, 3, sizes) == pytest.approx(38500 / 450)
    # equal sizes reduce to A_t; only the first t sizes are needed
    assert micro_accuracy_after_step(R3, 1, [7]) == pytest.approx(80.0)
    assert micro_accuracy_after_step(R3, 3, [5, 5, 5]) == pytest.approx(75.0)


def test_plasticity_per_task_and_a_strategy_that_never_learned():
    assert plasticity_gains(R3) == pytest.approx([70.0, 70.0, 25.0])
    # A strategy whose rows all equal row 0 (zero-shot, or MoRA that never routed to new atoms):
    # forgetting and BWT read as perfect, but the diagonal never rises above row 0.
    frozen = [[30.0, 40.0, 50.0]] * 4
    assert forgetting_chaudhry(frozen) == 0.0 and bwt(frozen) == 0.0
    assert learning_accuracy(frozen) == pytest.approx(40.0)
    assert plasticity_gain(frozen) == 0.0
    # Learned task 1 only: 60 over 30, then 40 and 50 stay at row 0 -> gains 30, 0, 0 -> 10.
    one = [[30.0, 40.0, 50.0], [60.0, 40.0, 50.0], [60.0, 40.0, 50.0], [55.0, 40.0, 50.0]]
    assert plasticity_gains(one) == [30.0, 0.0, 0.0]
    assert plasticity_gain(one) == pytest.approx(10.0)
    assert learning_accuracy(one) == pytest.approx(50.0)
    # The diagonal is all these metrics need: the upper triangle may be missing.
    partial = np.array(R3)
    partial[1, 1:] = np.nan
    assert learning_accuracy(partial) == pytest.approx(230 / 3)
    with pytest.raises(ValueError, match="diagonal"):
        learning_accuracy(np.where(np.eye(4, 3, -1) > 0, np.nan, np.array(R3)))


def test_variants_differ_where_designed():
    f_ch, f_fml, f_cl = forgetting_chaudhry(R3), forgetting_first_minus_last(R3), forgetting_max_clipped(R3)
    assert len({f_ch, f_fml, f_cl}) == 3
    assert bwt(R3) == -f_fml
    assert mtil_transfer(R3) != transfer_row_mean_mammoth(R3)


def test_mtil_per_task():
    per = mtil_per_task(R3)
    assert per["transfer"][0] is None
    assert per["transfer"][1:] == pytest.approx([40.0, 42.5])
    assert per["avg"] == pytest.approx([235 / 3, 75.0, 145 / 3])
    assert per["last"] == pytest.approx([70.0, 95.0, 60.0])


def test_scale_agnostic():
    frac = np.array(R3) / 100
    for name, want in HAND.items():
        assert _FUNCS[name](frac) == pytest.approx(want / 100, abs=1e-12), name


def test_mtil_metrics_ignore_row_0():
    other = np.array(R3)
    other[0] = [99.0, -5.0, 1e6]
    for fn in (mtil_transfer, mtil_avg, mtil_last, transfer_row_mean_mammoth, learning_accuracy):
        assert fn(other) == fn(R3)
    assert fwt(other) != fwt(R3)  # fwt and the plasticity gain use row 0
    assert plasticity_gain(other) != plasticity_gain(R3)


def test_t1_behaviour():
    R = [[5.0], [50.0]]
    assert last_accuracy(R) == 50.0
    assert average_incremental_accuracy(R) == 50.0
    assert accuracy_curve(R) == [50.0]
    assert mtil_avg(R) == 50.0 and mtil_last(R) == 50.0
    assert learning_accuracy(R) == 50.0 and plasticity_gain(R) == 45.0
    assert mtil_per_task(R) == {"transfer": [None], "avg": [50.0], "last": [50.0]}
    for fn in (forgetting_chaudhry, forgetting_first_minus_last, forgetting_max_clipped, bwt, fwt,
               mtil_transfer, transfer_row_mean_mammoth):
        assert math.isnan(fn(R)), fn.__name__
    out = compute_metrics(R)
    assert math.isnan(out["bwt"]) and out["last_accuracy"] == 50.0


@pytest.mark.parametrize(
    "R, match",
    [
        ([1.0, 2.0], "2-D"),
        (np.zeros((2, 2, 1)), "2-D"),
        (np.zeros((3, 3)), r"shape \(T\+1, T\) = \(4, 3\)"),
        (np.zeros((3, 1)), r"shape \(T\+1, T\) = \(2, 1\)"),
        (np.zeros((1, 0)), "T >= 1"),
        ([[1.0, 2.0], [3.0]], "rectangular"),
        ([["a", "b"], ["c", "d"], ["e", "f"]], "rectangular"),
    ],
)
def test_validation_errors(R, match):
    with pytest.raises(ValueError, match=match) as info:
        last_accuracy(R)
    assert "\n" not in str(info.value)


def test_nan_in_used_part_raises_but_unused_part_is_fine():
    R = np.array(R3)
    R[1, 2] = np.nan  # upper triangle: a future task not evaluated after task 1
    assert last_accuracy(R) == 75.0
    assert forgetting_chaudhry(R) == 5.0 and bwt(R) == -2.5
    with pytest.raises(ValueError, match=r"task 3, rows 1\.\.2"):
        mtil_transfer(R)
    with pytest.raises(ValueError, match=r"row 1, tasks 2\.\.3"):
        transfer_row_mean_mammoth(R)
    R = np.array(R3)
    R[3] = np.nan  # run in progress: task 3 not finished
    assert accuracy_after_step(R, 2) == 87.5
    with pytest.raises(ValueError, match="row 3"):
        last_accuracy(R)
    with pytest.raises(ValueError, match="NaN/inf"):
        compute_metrics(R)
    R = np.array(R3)
    R[0, 1] = np.inf
    with pytest.raises(ValueError, match="row 0"):
        fwt(R)


def test_argument_errors():
    for bad_t in (0, 4, 1.0, True):
        with pytest.raises(ValueError, match="t must be an integer in 1..3"):
            accuracy_after_step(R3, bad_t)
    with pytest.raises(ValueError, match="at least t=3"):
        micro_accuracy_after_step(R3, 3, [1, 2])
    with pytest.raises(ValueError, match="non-negative"):
        micro_accuracy_after_step(R3, 2, [1, -2])
    with pytest.raises(ValueError, match="unknown metric"):
        compute_metrics(R3, ["bwt", "acc"])


def test_complete_rows():
    assert complete_rows(R3) == 4
    R = np.array(R3)
    R[2:] = np.nan
    assert complete_rows(R) == 2
    R[0, 0] = np.nan
    assert complete_rows(R) == 0
    with pytest.raises(ValueError, match="shape"):
        complete_rows(np.zeros((2, 2)))


def test_registry_and_compute_metrics():
    assert set(METRICS) == set(HAND) == set(HIGHER_IS_BETTER)
    got = compute_metrics(R3)
    assert list(got) == list(METRICS)
    assert got == pytest.approx(HAND, abs=1e-12)
    assert compute_metrics(R3, ["fwt", "bwt"]) == pytest.approx({"fwt": 17.5, "bwt": -2.5})
    assert compute_metrics(R3, "mtil_last") == {"mtil_last": 75.0}
    assert [n for n, up in HIGHER_IS_BETTER.items() if not up] == [
        "forgetting_chaudhry", "forgetting_first_minus_last", "forgetting_max_clipped"]


def test_module_imports_with_numpy_only():
    """Loads the file on its own (not through clbench/__init__) and checks nothing heavy came in."""
    path = Path(__file__).resolve().parents[1] / "clbench" / "metrics.py"
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('m', {str(path)!r})\n"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        "bad = [m for m in ('torch', 'avalanche', 'pandas', 'scipy') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------------------------
# Published MTIL matrices (ZSCL, Zheng et al. 2023, mtil/results.ipynb): 18 cases.
# Copied from Thunderbeee/ZSCL's notebook outputs into tests/fixtures (see its "about" field), so the
# reproduction runs on a fresh clone; a missing file fails collection instead of skipping.
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "zscl_mtil_matrices.json"


def _fixture_params():
    cases = json.loads(FIXTURE.read_text())["cases"]
    ids = [f"{k:02d}-" + re.sub(r"[^A-Za-z0-9.*=]+", "_", c["label"]).strip("_") for k, c in enumerate(cases)]
    return [pytest.param(c, id=i) for c, i in zip(cases, ids)]


@pytest.mark.parametrize("case", _fixture_params())
def test_zscl_published_mtil_numbers(case):
    """Reproduces every reported Transfer/Avg/Last of one published matrix.

    Rounding: the notebook prints ``np.around(x.mean(), decimals=1)``, which computes
    ``rint(x * 10) / 10`` (half to even on the *scaled* float). For "Zero-shot |
    statistics(a, order=2)" the transfer is 65.35 in exact decimal but the float
    65.349999999999994: Python's ``round(x, 1)`` gives 65.3, while ``x * 10`` rounds to exactly
    653.5 and ``rint`` gives 654, i.e. the reported 65.4. So we compare with ``np.around`` (the
    authors' own rounding, exact equality) and also check ``|x - reported| <= 0.05 + 1e-9``.
    """
    M = np.asarray(case["matrix"], dtype=float)
    T = M.shape[1]
    assert M.shape == (T, T) == (11, 11)
    R0 = np.vstack([np.zeros(T), M])
    R_rand = np.vstack([np.random.default_rng(0).uniform(0, 100, T), M])
    funcs = {"transfer": mtil_transfer, "avg": mtil_avg, "last": mtil_last}
    for key, fn in funcs.items():
        value = fn(R0)
        assert fn(R_rand) == value, f"{key} depends on row 0"
        reported = case["reported"][key]
        assert abs(value - reported) <= 0.05 + 1e-9, (key, value, reported)
        assert float(np.around(value, 1)) == reported, (key, value, reported)
    per = mtil_per_task(R0)
    assert np.mean(per["transfer"][1:]) == pytest.approx(mtil_transfer(R0), abs=1e-12)
    assert mtil_last(R0) == pytest.approx(last_accuracy(R0), abs=1e-12)  # Last = A_T


# ---------------------------------------------------------------------------------------------
def test_matches_avalanche_stream_forgetting_and_bwt():
    """Cross-check against avalanche-lib 0.6.0 on one real run (sklearn digits, 5 x 2 classes).

    Finding, from ``avalanche/evaluation/metrics/forgetting_bwt.py``: ``StreamForgetting`` stores,
    per experience k, an *initial* value (the accuracy on k in an eval made while the last
    trained experience is k, i.e. R[k][k]) and a *last* value (reset before every eval, set for
    every other experience). It averages ``initial - last`` with weight 1 over the experiences
    having both. In the eval after the final experience T, the last value is missing for T
    itself, so the result is mean_{i<T} (R[i][i] - R[T][i]): no max, no clipping, i.e.
    ``forgetting_first_minus_last`` (not ``forgetting_chaudhry`` or ``forgetting_max_clipped``).
    ``StreamBWT`` subclasses it and negates each per-experience term (``forgetting_to_bwt``), so
    it is exactly ``-forgetting_first_minus_last`` = GEM ``bwt``. Tasks never evaluated right
    after their own training would silently drop out of Avalanche's mean.
    The run below (1 epoch, SGD lr 0.01, momentum 0.9) gives a matrix on which the three
    forgetting variants all differ, so the equality pins down the formula.
    ``Top1_Acc_Stream`` pools every test sample, which is ``micro_accuracy_after_step`` at T.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch = pytest.importorskip("torch")
        datasets = pytest.importorskip("sklearn.datasets")
        pytest.importorskip("avalanche")
        from avalanche.benchmarks.scenarios import class_incremental_benchmark
        from avalanche.benchmarks.utils.classification_dataset import (
            _make_taskaware_tensor_classification_dataset,
        )
        from avalanche.evaluation.metrics import accuracy_metrics, bwt_metrics, forgetting_metrics
        from avalanche.training.plugins import EvaluationPlugin
        from avalanche.training.supervised import Naive

        torch.manual_seed(0)
        X, y = datasets.load_digits(return_X_y=True)
        X, y = torch.tensor(X / 16.0, dtype=torch.float32), torch.tensor(y)
        perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
        tr, te = perm[:1200], perm[1200:]
        bm = class_incremental_benchmark(
            {"train": _make_taskaware_tensor_classification_dataset(X[tr], y[tr], task_labels=0),
             "test": _make_taskaware_tensor_classification_dataset(X[te], y[te], task_labels=0)},
            class_order=list(range(10)), num_experiences=5,
        )
        model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
        evaluator = EvaluationPlugin(
            accuracy_metrics(experience=True, stream=True),
            forgetting_metrics(experience=True, stream=True),
            bwt_metrics(experience=True, stream=True),
            loggers=[],
        )
        strategy = Naive(
            model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9),
            criterion=torch.nn.CrossEntropyLoss(), train_mb_size=32, train_epochs=1,
            eval_mb_size=256, device="cpu", evaluator=evaluator, eval_every=-1,
        )
        T = len(bm.test_stream)
        key = "Top1_Acc_Exp/eval_phase/test_stream/Exp{:03d}"
        rows = []
        res = strategy.eval(bm.test_stream)  # row 0: before any training
        rows.append([res[key.format(i)] for i in range(T)])
        for exp in bm.train_stream:
            strategy.train(exp, eval_streams=[bm.test_stream])
            res = strategy.eval(bm.test_stream)  # row t: after training experience t
            rows.append([res[key.format(i)] for i in range(T)])
        sizes = [len(e.dataset) for e in bm.test_stream]

    R = np.array(rows)
    f_fml = forgetting_first_minus_last(R)
    assert abs(f_fml - forgetting_chaudhry(R)) > 1e-3, "run no longer separates the variants"
    assert abs(f_fml - forgetting_max_clipped(R)) > 1e-3, "run no longer separates the variants"
    assert res["StreamForgetting/eval_phase/test_stream"] == pytest.approx(f_fml, abs=1e-12)
    assert res["StreamBWT/eval_phase/test_stream"] == pytest.approx(-f_fml, abs=1e-12)
    assert res["StreamBWT/eval_phase/test_stream"] == pytest.approx(bwt(R), abs=1e-12)
    for i in range(T - 1):  # per-experience terms: R[i][i] - R[T][i]
        exp_f = res[f"ExperienceForgetting/eval_phase/test_stream/Exp{i:03d}"]
        assert exp_f == pytest.approx(R[i + 1, i] - R[T, i], abs=1e-12)
    acc_stream = res["Top1_Acc_Stream/eval_phase/test_stream"]
    assert acc_stream == pytest.approx(micro_accuracy_after_step(R, T, sizes), abs=1e-12)


def test_metric_metadata_lives_with_the_metric():
    """Direction, report label and summary column come from one table; every metric has them."""
    from clbench.cli.summary import summary_lines
    from clbench.metrics import METRIC_INFO, metric_label, metric_short

    assert set(METRIC_INFO) == set(METRICS)
    shorts = [info.short for info in METRIC_INFO.values()]
    assert len(set(shorts)) == len(shorts) and all(" " not in s for s in shorts)
    assert all(info.label for info in METRIC_INFO.values())
    assert [n for n, info in METRIC_INFO.items() if info.measures_keeping] == [
        "forgetting_chaudhry", "forgetting_first_minus_last", "forgetting_max_clipped", "bwt"]
    assert metric_label("mtil_transfer") == "Transfer" and metric_short("nonexistent") == "nonexistent"
    header = summary_lines(["forgetting_max_clipped"], [])[0].split()
    assert "forget-clip" in header and "forget" in header
