"""Sharded LLM training (``--fsdp``, FSDP2 over gloo on the CPU): the numbers of a one-process run.

Under ``--fsdp`` only frozen weights are sharded (:mod:`clbench.fsdp`): a layer's forward runs on
its all-gathered weights, which are the very bytes of the unsharded weights, and the adapters'
gradients go through the same all-reduce as a plain data-parallel run. So a 2-process FSDP run
takes the steps a 2-process data-parallel run takes, which equal the 1-process steps up to the
order of floating-point sums (:mod:`clbench.distributed`): the accuracy matrices come out equal
and the trained tensors agree to float32 rounding (1e-6). One task here is scored by
generation (edit similarity: graded, and generation lengths differ between prompts), the path
where ranks evaluating different prompts would deadlock.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from clbench import statefile
from clbench.errors import UsageError
from clbench.preflight import RunOptions
from clbench.runner import run
from test_llm_backbones import save_tiny_llama

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
STRATEGIES = ("lora", "mora", "codyra")

BENCHMARK = """version = 1
description = "Two generated instruction skills on a tiny Llama, one scored by generation."
protocol = "domain-incremental"
backbone = "hf:{model}"
[train]
epochs = 2
batch_size = 4
eval_batch_size = 4
lr = 0.01
[[tasks]]
name = "uppercase"
loader = "generated-instructions"
metric = "exact_match"
options = {{ skill = "uppercase", n_train = 8, n_test = 5 }}
[[tasks]]
name = "plural"
loader = "generated-instructions"
metric = "edit_similarity"
options = {{ skill = "plural", n_train = 8, n_test = 5 }}
"""


@pytest.fixture(scope="module")
def llm_bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("fsdp-llama")
    model = save_tiny_llama(folder / "model")
    bench = folder / "fsdp-tiny.toml"
    bench.write_text(BENCHMARK.format(model=model), encoding="utf-8")
    return bench


def _clbench(*args: object) -> subprocess.CompletedProcess[str]:
    clbench = str(Path(sys.executable).with_name("clbench"))
    return subprocess.run([clbench, *map(str, args)], capture_output=True, text=True, env=ENV, timeout=900)


def _run_dir(out: Path, strategy: str) -> Path:
    (folder,) = (out / "fsdp-tiny" / strategy).glob("seed-0*")  # seed-0-S-dropout=0 where the strategy has dropout
    return folder


def _overrides(strategy: str) -> dict[str, str]:
    return {} if strategy == "codyra" else {"dropout": "0"}


def _checkpoint_tensors(run_dir: Path) -> dict[str, torch.Tensor]:
    pointer = json.loads((run_dir / "checkpoint" / "checkpoint.json").read_text())
    return statefile.load(run_dir / "checkpoint" / pointer["file"])["model"]


def _same_numbers(one: Path, two: Path, strategy: str) -> None:
    a, b = (json.loads((_run_dir(root, strategy) / "results.json").read_text()) for root in (one, two))
    assert a["matrix"]["values"] == b["matrix"]["values"], strategy
    assert a["identity"] == b["identity"] and a["run_id"] == b["run_id"]  # --fsdp is not part of the run's identity
    for x, y in zip(a["tasks"], b["tasks"], strict=True):
        np.testing.assert_allclose(x["loss_curve"], y["loss_curve"], rtol=1e-5, err_msg=strategy)
    ta, tb = (_checkpoint_tensors(_run_dir(root, strategy)) for root in (one, two))
    assert sorted(ta) == sorted(tb), strategy  # the sharded run saved whole tensors, the same ones
    for name in ta:
        torch.testing.assert_close(tb[name], ta[name], rtol=1e-4, atol=1e-5, msg=lambda m, n=name: f"{strategy} {n}: {m}")


def test_two_sharded_processes_match_one_for_lora_mora_codyra(llm_bench: Path, tmp_path: Path) -> None:
    two = _clbench("run", llm_bench, "-s", ",".join(STRATEGIES), "--out", tmp_path / "two", "--no-progress", "--nproc", "2", "--fsdp",
                   "-S", "dropout=0")
    assert two.returncode == 0, two.stderr[-4000:]
    for strategy in STRATEGIES:
        results = json.loads((_run_dir(tmp_path / "two", strategy) / "results.json").read_text())
        sharding = results["environment"]["fsdp"]
        assert results["environment"]["processes"] == 2 and sharding["units"] == 3  # 2 decoder layers and the decoder
        assert sharding["rank0_parameter_bytes"] < sharding["parameter_bytes"]  # rank 0 held only its shards
        run(RunOptions(benchmark=str(llm_bench), strategy=strategy, out=tmp_path / "one", overrides=_overrides(strategy), progress=False))
        _same_numbers(tmp_path / "one", tmp_path / "two", strategy)
    codyra = _checkpoint_tensors(_run_dir(tmp_path / "two", "codyra"))
    assert any(name.endswith("q_proj.weight") for name in codyra)  # CoDyRA merged into (and the run gathered) sharded weights
