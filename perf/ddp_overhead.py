"""Step time of a data-parallel run (torchrun, gloo on the CPU): 2 processes vs 1, same global batch.

Runs ``clbench run BENCH --nproc 1`` and ``--nproc 2`` alternately (``--repeats`` times each) on
a digits benchmark (MLP) and on a tiny random CLIP (two MTIL-style fixture domains, LoRA), and
prints the wall-clock seconds per optimizer step the runner recorded (``train_seconds / steps``,
medians) and their ratio. With N processes each rank computes 1/N of every global batch and the
gradients are all-reduced, so the ratio is 1/N plus the communication and duplicated work
(strategy hooks, data) over the one-process step. On a shared machine the wall clock moves with
the load: run it on an idle machine, and read the ratio, not the seconds.

    python perf/ddp_overhead.py                 # digits (mlp:256, batch 64) and tiny CLIP (batch 8)
    python perf/ddp_overhead.py --steps 60 --repeats 3
    python perf/ddp_overhead.py --skip-clip     # digits, and the tiny Llama: plain data parallelism vs --fsdp

The tiny-Llama line compares, on 2 processes, plain data parallelism with ``--fsdp`` (the frozen
weights sharded, LoRA adapters whole): rank 0's bytes of parameters, ms per step (FSDP all-gathers
each layer's weights for its forward and again for its backward) and rank 0's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # the tiny-CLIP and tiny-Llama fixture writers

DIGITS = """version = 1
description = "Two tasks of split digits for the DDP overhead measurement."
protocol = "class-incremental"
backbone = "mlp:256"
[train]
batch_size = 64
lr = 0.01
[[tasks]]
name = "a"
loader = "sklearn-digits"
options = {{ classes = [0, 1, 2, 3, 4] }}
[[tasks]]
name = "b"
loader = "sklearn-digits"
options = {{ classes = [5, 6, 7, 8, 9] }}
"""


def run_results(bench: Path, out: Path, strategy: str, steps: int, nproc: int, extra: list[str]) -> dict[str, Any]:
    """``results.json`` of ``clbench run BENCH -s STRATEGY --nproc N`` with ``steps`` optimizer steps per task."""
    clbench = str(Path(sys.executable).with_name("clbench"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([clbench, "run", str(bench), "-s", strategy, "--out", str(out), "--no-progress", "--overwrite", "-S", f"iterations={steps}",
                           "--nproc", str(nproc), *extra], capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(f"clbench run --nproc {nproc} {' '.join(extra)} failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(next(out.rglob("results.json")).read_text())


def per_step(results: dict[str, Any]) -> float:
    """Wall-clock seconds per optimizer step the runner recorded."""
    tasks = results["tasks"]
    return sum(t["train_seconds"] for t in tasks) / sum(t["steps"] for t in tasks)


def step_seconds(bench: Path, out: Path, strategy: str, steps: int, nproc: int, extra: list[str]) -> float:
    return per_step(run_results(bench, out, strategy, steps, nproc, extra))


def measure(name: str, bench: Path, strategy: str, steps: int, repeats: int, root: Path, extra: list[str]) -> None:
    times: dict[int, list[float]] = {1: [], 2: []}
    for r in range(repeats):
        for nproc in (1, 2):
            times[nproc].append(step_seconds(bench, root / f"{name}-{nproc}-{r}", strategy, steps, nproc, extra))
    one, two = statistics.median(times[1]), statistics.median(times[2])
    print(f"{name:8} {strategy:9} 1 proc {1000 * one:8.2f} ms/step   2 procs {1000 * two:8.2f} ms/step   ratio 2/1 {two / one:5.2f} "
          f"(ideal 0.50; {repeats} alternating repeats, medians)", flush=True)


def measure_fsdp(bench: Path, strategy: str, steps: int, repeats: int, root: Path) -> None:
    """2 processes, plain data parallelism vs ``--fsdp``: rank 0's parameter bytes, ms/step, peak RSS."""
    times: dict[str, list[float]] = {"dp": [], "fsdp": []}
    rss: dict[str, list[float]] = {"dp": [], "fsdp": []}
    sharding: dict[str, Any] = {}
    for r in range(repeats):
        for mode in ("dp", "fsdp"):
            results = run_results(bench, root / f"llm-{mode}-{r}", strategy, steps, 2, ["--fsdp"] if mode == "fsdp" else [])
            times[mode].append(per_step(results))
            rss[mode].append(max(t["peak_memory_mb"] for t in results["tasks"]))
            sharding = results["environment"].get("fsdp") or sharding
    dp, fsdp = statistics.median(times["dp"]), statistics.median(times["fsdp"])
    whole, mine = sharding["parameter_bytes"], sharding["rank0_parameter_bytes"]
    print(f"tinyllm  {strategy:9} 2 procs: parameters per rank {whole / 2**20:6.2f} MiB (dp) vs {mine / 2**20:6.2f} MiB (fsdp, "
          f"{sharding['sharded_parameters']} tensors sharded)   {1000 * dp:8.2f} vs {1000 * fsdp:8.2f} ms/step   ratio fsdp/dp {fsdp / dp:5.2f}   "
          f"rank-0 peak RSS {statistics.median(rss['dp']):6.0f} vs {statistics.median(rss['fsdp']):6.0f} MB ({repeats} alternating repeats, medians)",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps per task (default: 40)")
    parser.add_argument("--repeats", type=int, default=2, help="alternating repeats of each configuration (default: 2)")
    parser.add_argument("--skip-clip", action="store_true", help="no tiny CLIP")
    parser.add_argument("--skip-llm", action="store_true", help="no tiny Llama (the --fsdp line)")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; gloo backend, one thread per process")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        digits = root / "ddp-digits.toml"
        digits.write_text(DIGITS.format(), encoding="utf-8")
        measure("digits", digits, "finetune", args.steps, args.repeats, root, [])
        if not args.skip_clip:
            from test_vision_fixtures import write_two_domain_mtil

            clip = write_two_domain_mtil(root / "clip")
            measure("tinyclip", clip["bench"], "lora", max(2, args.steps // 4), args.repeats, root,
                    ["--data-root", str(clip["data"]), "--device", "cpu"])
        if not args.skip_llm:
            from test_llm_backbones import save_tiny_llama
            from test_lora_family_llm import BENCHMARK as LLM_BENCH

            llm = root / "ddp-llm.toml"
            llm.write_text(LLM_BENCH.format(model=save_tiny_llama(root / "llama", layers=4)), encoding="utf-8")
            measure_fsdp(llm, "lora", max(2, args.steps // 4), args.repeats, root)


if __name__ == "__main__":
    main()
