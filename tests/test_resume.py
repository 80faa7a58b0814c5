"""A real run killed mid-stream resumes from its last checkpoint to the same numbers."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from clbench.runner import RunOptions, run

OVERRIDES = ["-S", "epochs=25"]  # long enough per task to be killed between checkpoints


def _start(bench: Path, out: Path, strategy: str) -> subprocess.Popen[bytes]:
    clbench = str(Path(sys.executable).with_name("clbench"))
    return subprocess.Popen([clbench, "run", str(bench), "-s", strategy, "--seed", "4", "--out", str(out), "--no-progress", *OVERRIDES],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _kill_after_first_checkpoint(proc: subprocess.Popen[bytes], pointer: Path) -> dict:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if pointer.exists():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return json.loads(pointer.read_text())
        if proc.poll() is not None:
            raise AssertionError("run finished before it could be killed")
        time.sleep(0.02)
    proc.kill()
    raise AssertionError("no checkpoint within 120 s")


def test_killed_run_resumes_to_identical_metrics(small_digits: Path, tmp_path: Path) -> None:
    for strategy in ("finetune", "lora"):
        out = tmp_path / strategy
        run_dir = out / "digits-small" / strategy / "seed-4-S-epochs=25"
        pointer = _kill_after_first_checkpoint(_start(small_digits, out, strategy), run_dir / "checkpoint" / "checkpoint.json")
        assert pointer["tasks_done"] < 3
        killed = json.loads((run_dir / "results.json").read_text())
        assert killed["status"] == "running" and killed["matrix"]["values"][-1] is None

        clbench = str(Path(sys.executable).with_name("clbench"))
        resumed = subprocess.run([clbench, "run", str(small_digits), "-s", strategy, "--seed", "4", "--out", str(out), "--resume", "--no-progress", *OVERRIDES],
                                 capture_output=True, text=True)
        assert resumed.returncode == 0, resumed.stderr
        assert "resumed" in (run_dir / "run.log").read_text()
        finished = json.loads((run_dir / "results.json").read_text())

        reference = run(RunOptions(benchmark=str(small_digits), strategy=strategy, seed=4, out=tmp_path / "reference", progress=False,
                                   overrides={"epochs": "25"}))
        assert finished["status"] == "complete"
        assert finished["matrix"]["values"] == reference["matrix"]["values"]
        assert finished["metrics"] == reference["metrics"]
        # Per-example scores: the same bytes as an uninterrupted run's, so the same intervals.
        reference_dir = Path(reference["_path"]).parent
        assert (run_dir / "examples.npz").read_bytes() == (reference_dir / "examples.npz").read_bytes()
        assert finished["intervals"] == reference["intervals"] and finished["plasticity"] == reference["plasticity"]
        assert finished["budget"] == reference["budget"]
