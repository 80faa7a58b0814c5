"""Data parallelism (torchrun, gloo on the CPU): 2 processes give the 1-process run's accuracy matrix.

Every rank sees its share of the same global batches and the gradients are summed over ranks
(:mod:`clbench.distributed`), so the updates equal the 1-process ones up to the order of
floating-point sums. On these tiny runs the matrices come out equal exactly (all scores are 0/1,
so a row is a count); the loss curves agree to 1e-5 (the summation order of the two halves of
each batch differs from one process's sum). The per-example scores file is byte-identical: the
sharded evaluation neither drops nor repeats an example, though a test set (91 examples) does not
divide by 2.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from clbench.errors import UsageError
from clbench.preflight import RunOptions
from clbench.runner import run
from conftest import stopped_in_task

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def _launch(bench: Path, out: Path, strategies: str, nproc: int, *settings: str) -> subprocess.CompletedProcess[str]:
    clbench = str(Path(sys.executable).with_name("clbench"))
    flags = [flag for setting in ("epochs=1", *settings) for flag in ("-S", setting)]
    return subprocess.run([clbench, "run", str(bench), "-s", strategies, "--out", str(out), "--no-progress", *flags,
                           "--nproc", str(nproc)], capture_output=True, text=True, env=ENV, timeout=600)


def _close(a: object, b: object) -> bool:
    """Equal structure and strings, numbers within 1e-5 (relative)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    if isinstance(a, float | int) and isinstance(b, float | int) and not isinstance(a, bool):
        return a == pytest.approx(b, rel=1e-5, abs=1e-9)
    return a == b


def _same_runs(one: Path, two: Path, strategies: str, folder: str = "seed-0-S-epochs=1") -> None:
    for strategy in strategies.split(","):
        a_dir, b_dir = (root / "digits-small" / strategy / folder for root in (one, two))
        a, b = (json.loads((d / "results.json").read_text()) for d in (a_dir, b_dir))
        assert a["matrix"]["values"] == b["matrix"]["values"], strategy
        assert _close(a["telemetry"], b["telemetry"]), strategy  # norms summed in another order: 1e-5
        assert b["examples"]["sizes"] == a["examples"]["sizes"] and any(n % 2 for n in a["examples"]["sizes"])  # one test set is odd
        for x, y in zip(a["tasks"], b["tasks"], strict=True):
            np.testing.assert_allclose(x["loss_curve"], y["loss_curve"], atol=1e-5, err_msg=strategy)
            assert x["steps"] == y["steps"]
        assert (a_dir / "examples.npz").read_bytes() == (b_dir / "examples.npz").read_bytes(), strategy
        assert sorted(p.name for p in b_dir.iterdir()) == sorted(p.name for p in a_dir.iterdir())  # rank 0 alone wrote the folder


def _check(small_digits: Path, tmp_path: Path, strategies: str) -> None:
    two = _launch(small_digits, tmp_path / "two", strategies, 2)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("seed-0-S-epochs=1") == len(strategies.split(","))  # one summary, printed by rank 0
    for strategy in strategies.split(","):  # the 1-process reference, in this process (no second launch)
        run(RunOptions(benchmark=str(small_digits), strategy=strategy, out=tmp_path / "one", overrides={"epochs": "1"}, progress=False))
    _same_runs(tmp_path / "one", tmp_path / "two", strategies)


def test_two_processes_match_one_for_lora_and_finetune(small_digits: Path, tmp_path: Path) -> None:
    _check(small_digits, tmp_path, "lora,finetune")


@pytest.mark.slow  # five more strategies through torchrun: about a minute on 2 cores
def test_two_processes_match_one_for_mora_codyra_coso_ewc_replay(small_digits: Path, tmp_path: Path) -> None:
    _check(small_digits, tmp_path, "mora,codyra,coso,ewc,replay")


def test_routing_usage_is_summed_over_ranks_for_smora_and_flylora(small_digits: Path, tmp_path: Path) -> None:
    """SMoRA's and FlyLoRA's load-balancing bias moves with the global batch's usage counts. Batches of 269
    leave a 1-example last batch in tasks a and b (270 examples), so one rank holds no example there: its
    stand-in example must not be counted (the telemetry's usage balance would differ from one process's).
    SMoRA without dropout: each rank draws its own masks, an equally valid run but not the same numbers."""
    settings = ("batch_size=269", "dropout=0")
    two = _launch(small_digits, tmp_path / "two", "smora,flylora", 2, *settings)
    assert two.returncode == 0, two.stderr[-3000:]
    for strategy in ("smora", "flylora"):
        overrides = {"epochs": "1", "batch_size": "269", **({"dropout": "0"} if strategy == "smora" else {})}
        run(RunOptions(benchmark=str(small_digits), strategy=strategy, out=tmp_path / "one", overrides=overrides, progress=False))
    _same_runs(tmp_path / "one", tmp_path / "two", "smora", "seed-0-S-batch_size=269,dropout=0.0,epochs=1")
    _same_runs(tmp_path / "one", tmp_path / "two", "flylora", "seed-0-S-batch_size=269,epochs=1")


@pytest.mark.slow  # two runs and a torchrun launch: about 40 s on 2 cores
def test_resume_under_torchrun(small_digits: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run stopped after two tasks resumes under torchrun (2 processes) to the uninterrupted numbers."""
    options = {"benchmark": str(small_digits), "strategy": "finetune", "overrides": {"epochs": "1"}, "progress": False}
    reference = run(RunOptions(**options, out=tmp_path / "ref"))
    stopped_in_task(monkeypatch, 3, RunOptions(**options, out=tmp_path / "two"))
    clbench = str(Path(sys.executable).with_name("clbench"))
    done = subprocess.run([clbench, "run", str(small_digits), "-s", "finetune", "--out", str(tmp_path / "two"), "--no-progress", "-S", "epochs=1",
                           "--nproc", "2", "--resume"], capture_output=True, text=True, env=ENV, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = tmp_path / "two" / "digits-small" / "finetune" / "seed-0-S-epochs=1"
    resumed = json.loads((run_dir / "results.json").read_text())
    assert "resumed" in (run_dir / "run.log").read_text() and resumed["status"] == "complete"
    assert resumed["matrix"]["values"] == reference["matrix"]["values"]
    assert (run_dir / "examples.npz").read_bytes() == (Path(reference["_path"]).parent / "examples.npz").read_bytes()


def test_a_strategy_that_cannot_run_distributed_says_so(small_digits: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("avalanche")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UsageError, match="strategy 'avalanche:EWC' cannot run data-parallel"):
        run(RunOptions(benchmark=str(small_digits), strategy="avalanche:EWC", out=tmp_path, progress=False))
    assert not (tmp_path / "digits-small").exists()


def test_nproc_is_checked(cli, small_digits: Path, tmp_path: Path) -> None:
    status, _, err = cli("run", small_digits, "--nproc", "0", "--out", tmp_path / "runs")
    assert status == 2 and "--nproc must be between 1 and 1024, got 0" in err and not (tmp_path / "runs").exists()
