"""perf/gpu_check.sh: it refuses without CUDA (one line, exit 2, nothing written), and its summary
reports ms/call, floor fractions and ratios against eager and peft, and failed steps."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "perf" / "gpu_check.sh"


def _run(out: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": "", **env}
    return subprocess.run(["bash", str(SCRIPT), str(out)], capture_output=True, text=True, env=full_env, timeout=900)


def _summary_module():
    spec = importlib.util.spec_from_file_location("gpu_summary", ROOT / "perf" / "gpu_summary.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_refuses_without_cuda_in_one_line_and_writes_nothing(tmp_path: Path) -> None:
    result = _run(tmp_path / "out")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("gpu_check: no CUDA device")
    assert "nothing was run" in result.stderr
    assert not (tmp_path / "out").exists()


def test_rejects_an_unknown_device_setting(tmp_path: Path) -> None:
    result = _run(tmp_path / "out", GPU_CHECK_DEVICE="tpu")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "GPU_CHECK_DEVICE" in result.stderr


def test_summary_reports_ratios_floors_and_failed_steps(tmp_path: Path) -> None:
    from clbench import perfbench

    perf = perfbench.run_benchmark(torch.device("cpu"), perfbench.SHAPE_SETS["tiny"], ["base", "eager", "peft", "cpu"], ["fwd"],
                                   repeats=1, warmup=0, threads=1, log=lambda _: None)
    perfbench.write_json(perf, tmp_path / "perf.json")
    (tmp_path / "steps.tsv").write_text("gpu-tests\t0\t41\tgpu-tests.log\nkernels-perf\t0\t30\tkernels-perf.log\n"
                                        "clip-step\t124\t90\tclip-step.log\n")
    (tmp_path / "env.json").write_text(json.dumps({"device": "NVIDIA H100", "torch": torch.__version__}))
    gpu_summary = _summary_module()
    summary = gpu_summary.summarise(tmp_path)
    assert not summary["passed"] and summary["clip_missing"] and not summary["perf_missing"]
    assert [s["result"] for s in summary["steps"]] == ["ok", "ok", "timed out"]
    cpu = next(r for r in summary["kernels"] if r["impl"] == "cpu")
    rows = {r["impl"]: r for r in perf["rows"]}
    assert cpu["x_eager"] == pytest.approx(rows["cpu"]["seconds"] / rows["eager"]["seconds"])
    assert cpu["x_peft"] == pytest.approx(rows["cpu"]["seconds"] / rows["peft"]["seconds"])
    assert cpu["floor_fraction"] == rows["cpu"]["floor_fraction"]
    text = gpu_summary.markdown(summary)
    assert "**FAILED**" in text and "| clip-step | timed out (124) |" in text and "| tiny | fwd | cpu |" in text
    assert "Missing results" in text and "clip" in text


@pytest.mark.slow
def test_cpu_dry_run_runs_every_step_and_writes_the_summary(tmp_path: Path) -> None:
    result = _run(tmp_path / "out", GPU_CHECK_DEVICE="cpu")
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [s["step"] for s in summary["steps"]][-4:] == ["gpu-tests", "kernels-perf", "clip-step", "coso-step"]
    assert summary["passed"] and summary["dry_run"] and summary["kernels"] and summary["clip"] and summary["coso"]
    assert (tmp_path / "out" / "summary.md").read_text().startswith("# GPU check")
