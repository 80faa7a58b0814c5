"""Sharded LLM training (``--fsdp``, FSDP2 over gloo on the CPU): the numbers of a one-process run.

Under ``--fsdp`` only frozen weights are sharded (:mod:`clbench.fsdp`): a layer's forward runs on
its all-gathered weights, which are the very bytes of the unsharded weights, and the adapters'
gradients go through the same all-reduce as a plain data-parallel run. So a 2-process FSDP run
takes the steps a 2-process data-parallel run takes, which equal the 1-process steps up to the
order of floating-point sums (:mod:`clbench.distributed`): the accuracy matrices come out equal
and the trained tensors agree to float32 rounding (1e-6). One task here is scored by
generation (edit similarity: graded, and generation lengths differ between prompts), the path
where ranks evaluating different prompts would deadlock. The first task has 9 training examples in
batches of 4: its last batch leaves rank 1 without an example, which under ``--fsdp`` must still
run the (zero-weighted) forward and backward, both collectives.
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
from conftest import stopped_in_task
from test_llm_backbones import save_tiny_llama

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}

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
options = {{ skill = "uppercase", n_train = 9, n_test = 5 }}
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
    if strategy == "mora":  # every rank evaluated every test set: its routing counts are the whole sets', not summed over ranks
        for x, y in zip(a["telemetry"], b["telemetry"], strict=True):
            assert x["mora"]["routing_tokens"] == y["mora"]["routing_tokens"]
            np.testing.assert_allclose(x["mora"]["routing_matrix"], y["mora"]["routing_matrix"], atol=1e-5)
    ta, tb = (_checkpoint_tensors(_run_dir(root, strategy)) for root in (one, two))
    assert sorted(ta) == sorted(tb), strategy  # the sharded run saved whole tensors, the same ones
    for name in ta:
        torch.testing.assert_close(tb[name], ta[name], rtol=1e-4, atol=1e-5, msg=lambda m, n=name: f"{strategy} {n}: {m}")


@pytest.mark.parametrize("strategies", [
    ("lora", "codyra"),  # one torchrun launch: about 30 s on 2 idle cores
    pytest.param(("mora",), marks=pytest.mark.slow),  # a second launch for the third strategy: about 20 s
])
def test_two_sharded_processes_match_one(llm_bench: Path, tmp_path: Path, strategies: tuple[str, ...]) -> None:
    two = _clbench("run", llm_bench, "-s", ",".join(strategies), "--out", tmp_path / "two", "--no-progress", "--nproc", "2", "--fsdp",
                   "-S", "dropout=0")
    assert two.returncode == 0, two.stderr[-4000:]
    for strategy in strategies:
        results = json.loads((_run_dir(tmp_path / "two", strategy) / "results.json").read_text())
        sharding = results["environment"]["fsdp"]
        assert results["environment"]["processes"] == 2 and sharding["units"] == 3  # 2 decoder layers and the decoder
        assert sharding["rank0_parameter_bytes"] < sharding["parameter_bytes"]  # rank 0 held only its shards
        run(RunOptions(benchmark=str(llm_bench), strategy=strategy, out=tmp_path / "one", overrides=_overrides(strategy), progress=False))
        _same_numbers(tmp_path / "one", tmp_path / "two", strategy)
    if "codyra" in strategies:
        codyra = _checkpoint_tensors(_run_dir(tmp_path / "two", "codyra"))
        assert any(name.endswith("q_proj.weight") for name in codyra)  # CoDyRA merged into (and the run gathered) sharded weights


def _sharding_worker(rank: int, init_file: str) -> None:
    """One of 2 gloo processes: shard a tiny Llama whose q projections carry CoDyRA adapters, then
    check the sharding, the forward, the merge into a sharded weight, the gathered checkpoint delta
    and the restore against the same model left whole (built from the same seed on each rank)."""
    import copy

    import torch.distributed as dist
    from torch.distributed.tensor import DTensor
    from transformers import LlamaConfig, LlamaForCausalLM

    from clbench import checkpoint, fsdp
    from clbench.backbones.hf_causal import CausalLMBackbone
    from clbench.strategies.codyra.layer import apply_codyra, merge_codyra
    from clbench.testing import byte_tokenizer

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        tok = byte_tokenizer()
        config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=2, pad_token_id=0, eos_token_id=1, bos_token_id=None)
        backbone = CausalLMBackbone("hf:tiny", LlamaForCausalLM(config).eval(), tok)
        model = backbone.model
        model.requires_grad_(False)
        names = [f"model.layers.{i}.self_attn.q_proj" for i in range(2)]
        adapters = apply_codyra(model, {n: model.get_submodule(n) for n in names}, rank=2)
        for adapter in adapters.values():
            torch.nn.init.normal_(adapter.lora_B)  # a nonzero update to merge
        whole = copy.deepcopy(model)
        root, layers, keep = backbone.fsdp_units()
        assert len(layers) == 2 and root is model.model
        count = fsdp.shard_model(root, layers, keep)
        q = adapters[names[0]].base.weight
        assert isinstance(q, DTensor) and q.shape == (32, 32) and q.to_local().shape == (16, 32)  # half the rows on each rank
        assert torch.equal(q.to_local(), whole.get_submodule(names[0]).base.weight[16 * rank : 16 * (rank + 1)])
        assert not any(isinstance(p, DTensor) for a in adapters.values() for p in a.parameters() if p.requires_grad)  # adapters stay whole
        assert not isinstance(model.lm_head.weight, DTensor) and count == len(fsdp.sharded_parameters(model)) > 0
        assert fsdp.local_parameter_bytes(model) < fsdp.local_parameter_bytes(whole)
        ids = torch.tensor([[5, 9, 14, 3], [7, 2, 8, 11]])
        with torch.no_grad():
            torch.testing.assert_close(model(input_ids=ids).logits, whole(input_ids=ids).logits, rtol=0, atol=0)
        reference = checkpoint.fingerprints(model)  # this rank's shards, as the runner takes them
        assert checkpoint.changed_state(model, reference) == {}
        merge_codyra(model, adapters)
        merge_codyra(whole, {n: whole.get_submodule(n) for n in names})
        delta = checkpoint.changed_state(model, reference)  # both ranks gather the merged weights whole
        assert sorted(delta) == [f"{n}.weight" for n in names]
        for name in names:
            assert torch.equal(delta[f"{name}.weight"], whole.get_submodule(name).weight)
            assert torch.equal(model.get_submodule(name).weight.full_tensor(), whole.get_submodule(name).weight)
        fresh = torch.randn(32, 32, generator=torch.Generator().manual_seed(1))
        checkpoint.restore_model(model, {f"{names[1]}.weight": fresh})  # a resume: each rank takes its rows
        assert torch.equal(model.get_submodule(names[1]).weight.full_tensor(), fresh)
    finally:
        dist.destroy_process_group()


def test_sharding_and_merges_into_sharded_weights_on_two_gloo_processes(tmp_path: Path) -> None:
    torch.multiprocessing.spawn(_sharding_worker, args=(str(tmp_path / "rendezvous"),), nprocs=2, join=True)


@pytest.mark.slow  # a second torchrun launch and two more runs: about 25 s on 2 cores
def test_resume_under_torchrun_and_fsdp_and_the_final_model_on_one_process(llm_bench: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                            cli) -> None:
    """A CoDyRA run stopped after its first task (its checkpoint holds merged, changed base weights)
    resumes on 2 processes under ``--fsdp`` (each rank loads its rows of them) to the uninterrupted
    numbers; the checkpoint that sharded run then gathered and saved rebuilds, on one process, the
    final model that ``clbench eval`` scores as the run's last row."""
    options = {"benchmark": str(llm_bench), "strategy": "codyra", "progress": False}
    reference = run(RunOptions(**options, out=tmp_path / "ref"))
    stopped_in_task(monkeypatch, 2, RunOptions(**options, out=tmp_path / "two"))
    run_dir = _run_dir(tmp_path / "two", "codyra")
    assert any(name.endswith("q_proj.weight") for name in _checkpoint_tensors(run_dir))
    done = _clbench("run", llm_bench, "-s", "codyra", "--out", tmp_path / "two", "--no-progress", "--nproc", "2", "--fsdp", "--resume")
    assert done.returncode == 0, done.stderr[-4000:]
    resumed = json.loads((run_dir / "results.json").read_text())
    assert "resumed" in (run_dir / "run.log").read_text() and resumed["status"] == "complete" and resumed["environment"]["fsdp"]
    assert resumed["matrix"]["values"] == reference["matrix"]["values"]
    status, stdout, stderr = cli("eval", run_dir, "--benchmark", llm_bench, "--out", tmp_path / "evals")
    assert status == 0, stderr
    evaluated = json.loads(Path(stdout.strip().splitlines()[-1].removeprefix("results: ")).read_text())
    assert evaluated["matrix"]["values"] == [resumed["matrix"]["values"][-1]]


def test_fsdp_refusals_are_one_line_before_anything_is_written(cli, llm_bench: Path, small_digits: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    cases = [
        ((llm_bench, "-s", "lora", "--fsdp"), "--fsdp shards the model over processes: add --nproc N with N >= 2"),
        ((llm_bench, "-s", "lora", "--fsdp", "--nproc", "1"), "--fsdp shards the model over processes"),
        ((small_digits, "-s", "lora", "--fsdp", "--nproc", "2"), "--fsdp shards causal LMs (hf:... backbones), not 'mlp:32'"),
        ((llm_bench, "-s", "lora,finetune", "--fsdp", "--nproc", "2"), "strategy 'finetune' cannot run sharded (--fsdp): it trains every weight"),
        ((llm_bench, "-s", "ewc", "--fsdp", "--nproc", "2"), "strategy 'ewc' cannot run sharded (--fsdp): it is not one of the strategies"),
        ((llm_bench, "-s", "lora", "--fsdp", "--nproc", "2", "--kv-cache", "d2o:0.5"), "--fsdp with a --kv-cache policy is not supported"),
    ]
    for args, message in cases:
        status, _, err = cli("run", *args, "--out", out, "--no-progress")
        assert status == 2 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, (args, err)
    with pytest.raises(UsageError, match="--fsdp shards the model over processes"):  # the Python API, outside torchrun
        run(RunOptions(benchmark=str(llm_bench), strategy="lora", out=out, fsdp=True, progress=False))
    assert not out.exists()
