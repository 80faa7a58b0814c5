"""The bad-input battery: every case must end with one short message and leave the disk as it was.

Each case starts from a fresh copy of one prepared folder (a finished run, a run stopped after
two of three tasks, benchmark files, datasets, a results file; see ``battery_support``), damages
or asks for one thing, runs ``clbench`` and asserts: the exit status; a message of at most six
lines that starts with ``clbench:``, names the problem and is neither a traceback nor an
"internal error"; no new folder or file; no earlier file changed (a ``run.log`` may only grow).

Most cases run in-process (the ``cli`` fixture); the signal cases run the real command in a
subprocess because a signal needs a process. File-system faults are injected at the one
function through which clbench writes file bytes (``clbench.safeio._write``), as ``os.write``
would raise them; ``test_safety.py`` repeats the full-disk and read-only cases for real on a
tmpfs and a read-only bind mount where the machine allows it.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

from battery_support import (BENCH, TINY_BENCH, WNIDS, assert_unchanged, build_template, clbench_command, edit_json,
                             gzip_bytes, idx_labels, no_free_space, snapshot)
from battery_builders import (CKPT, RESULTS, _budget_without_record, bench_with, examples_with, faults, foreign_safetensors, hold_lock,
                             legacy_tensor_file, plugin, pointer_with, results_with, state_file, tensor_file, truncated, write)

B = f"bench/{BENCH}.toml"
RUN = ["run", B, "--out", "runs", "--no-progress"]
NEW = [*RUN, "--seed", "7"]          # a run that does not exist yet
FIN = [*RUN, "--seed", "0"]          # the finished run
PART = [*RUN, "--seed", "1"]         # the run stopped after tasks 1-2
SLOW = [*RUN, "--seed", "2", "-S", "epochs=300"]  # stopped after tasks 1-2; task 3 takes seconds
BAD = ["run", "bench/bad.toml", "--out", "runs", "--no-progress"]
REPORT = ["report", "results", "--out", "reports"]
EXAMPLES = RESULTS.with_name("examples.npz")  # the per-example scores beside the report's results file
PART_EXAMPLES = CKPT.with_name("examples.npz")  # those of the stopped run (rows 0-2)
FINDIR = Path("runs") / BENCH / "finetune" / "seed-0"  # the finished run (export and eval read it)
PARTDIR = CKPT.parent
CFG = ["run", "--no-progress", "--config"]  # a run config file; the file names benchmark, out and seed
RUN_CFG = f'benchmark = "{B}"\nout = "runs"\nseeds = [7]\n'
FASHION = ["run", "bench/fashion.toml", "--out", "runs", "--no-progress", "--data-root", "fashion"]
FASHION_RAW = Path("fashion") / "FashionMNIST" / "raw"


@dataclass
class Case:
    id: str
    args: list[str]
    message: str
    status: int = 2
    prepare: Callable[[Path], Any] | None = None  # damage the copy before the snapshot; may return a cleanup callable
    patch: Callable[[pytest.MonkeyPatch, Path], None] | None = None  # fault injection after the snapshot
    signal: int | None = None  # run in a subprocess and send this signal once `wait_for` exists
    wait_for: str = ""
    marks: list[Any] = field(default_factory=list)


STRATEGY_OK = "from clbench.strategies.finetune import FineTune as Ok\n"
ARGY = '''from clbench.strategies.finetune import FineTune
class Argy(FineTune):
    """Takes any argument."""
    @classmethod
    def for_argument(cls, argument):
        return cls
'''
BACKBONE_NOT = "def build(spec):\n    return object()\n"

CASES = [
    # ---- command line: names, seeds, specs, devices, folders -------------------------------------------------------------------------------
    Case("strategy-empty", [*NEW, "-s", ""], "-s/--strategy is empty"),
    Case("strategy-commas", [*NEW, "-s", ",,"], "-s/--strategy is empty"),
    Case("strategy-empty-item", [*NEW, "-s", "lora,,finetune"], "has an empty item"),
    Case("strategy-repeated", [*NEW, "-s", "lora,lora"], "repeats lora"),
    Case("strategy-unknown", [*NEW, "-s", "fintune"], "did you mean 'finetune'"),
    Case("strategy-unknown-dist", [*NEW, "-s", "nodist/lora"], "unknown strategy 'nodist/lora'"),
    Case("strategy-colon-empty", [*NEW, "-s", "lora:"], "ends with ':'"),
    Case("strategy-no-argument", [*NEW, "-s", "lora:x"], "takes no ':ARGUMENT'"),
    Case("strategy-5000-chars", [*NEW, "-s", "x" * 5000], "(5000 characters)"),
    Case("seed-empty", [*RUN, "--seed", ""], "--seed is empty"),
    Case("seed-empty-item", [*RUN, "--seed", "1,,2"], "has an empty item"),
    Case("seed-word", [*RUN, "--seed", "a"], "--seed takes comma-separated integers"),
    Case("seed-float", [*RUN, "--seed", "1.5"], "--seed takes comma-separated integers"),
    Case("seed-negative", [*RUN, "--seed=-1"], "seeds are integers from 0 to 4294967295"),
    Case("seed-huge", [*RUN, "--seed", "99999999999999999999999"], "seeds are integers from 0 to 4294967295"),
    Case("seed-2**32", [*RUN, "--seed", "4294967296"], "seeds are integers from 0 to 4294967295"),
    Case("seed-repeated", [*RUN, "--seed", "3,3"], "repeats 3"),
    Case("backbone-empty", [*NEW, "--backbone", ""], "--backbone is empty"),
    Case("backbone-blank", [*NEW, "--backbone", "  "], "--backbone is empty"),
    Case("backbone-bad-width", [*NEW, "--backbone", "mlp:x"], "bad MLP spec 'mlp:x'"),
    Case("backbone-zero-width", [*NEW, "--backbone", "mlp:0"], "widths must be positive"),
    Case("backbone-negative-width", [*NEW, "--backbone", "mlp:-5"], "widths must be positive"),
    Case("backbone-unknown-kind", [*NEW, "--backbone", "nope:1"], "unknown backbone 'nope:1'"),
    Case("backbone-unknown-dist", [*NEW, "--backbone", "other/mlp:16"], "unknown backbone 'other/mlp'"),
    Case("backbone-5000-chars", [*NEW, "--backbone", "m" * 5000], "5000 characters long"),
    Case("device-no-cuda", [*NEW, "--device", "cuda:7"], "no CUDA device is available"),
    Case("device-unknown", [*NEW, "--device", "tpu"], "unknown device 'tpu'"),
    Case("data-root-missing", [*NEW, "--data-root", "no/such/folder"], "--data-root no/such/folder does not exist"),
    Case("data-root-file", [*NEW, "--data-root", "afile"], "--data-root afile is a file"),
    Case("out-is-file", [*RUN, "--out", "afile"], "afile is a file, not a folder"),
    Case("out-under-file", [*RUN, "--out", "afile/sub"], "afile is a file, not a folder"),
    Case("resume-and-overwrite", [*FIN, "--resume", "--overwrite"], "not allowed with argument"),
    Case("benchmark-empty", ["run", "", "--out", "runs"], "empty benchmark name"),
    Case("benchmark-unknown", ["run", "digit-split", "--out", "runs"], "did you mean 'digits-split'"),
    Case("benchmark-file-missing", ["run", "bench/missing.toml", "--out", "runs"], "does not exist"),
    Case("benchmark-file-5000-chars", ["run", "b" * 5000 + ".toml", "--out", "runs"], "(5005 characters)"),
    Case("benchmark-file-dots", ["run", "bench/...toml", "--out", "runs"], "cannot name a folder", prepare=write("bench/...toml", TINY_BENCH)),
    Case("benchmark-file-hidden", ["run", "bench/.hidden.toml", "--out", "runs"], "cannot name a folder", prepare=write("bench/.hidden.toml", TINY_BENCH)),
    Case("benchmark-file-control-char", ["run", "bench/a\tb.toml", "--out", "runs"], "cannot name a folder", prepare=write("bench/a\tb.toml", TINY_BENCH)),
    # ---- -S settings -----------------------------------------------------------------------------------------------------------------------
    Case("lr-inf", [*NEW, "-S", "lr=inf"], "lr must be a finite number, got inf"),
    Case("lr-minus-inf", [*NEW, "-S", "lr=-inf"], "lr must be a finite number, got -inf"),
    Case("lr-nan", [*NEW, "-S", "lr=nan"], "lr must be a finite number, got nan"),
    Case("lr-zero", [*NEW, "-S", "lr=0"], "lr must be a positive number, got 0"),
    Case("lr-negative", [*NEW, "-S", "lr=-0.1"], "lr must be a positive number"),
    Case("lr-word", [*NEW, "-S", "lr=fast"], "lr takes a number, got 'fast'"),
    Case("epochs-zero", [*NEW, "-S", "epochs=0"], "epochs must be >= 1, got 0"),
    Case("epochs-negative", [*NEW, "-S", "epochs=-3"], "epochs must be >= 1"),
    Case("epochs-fraction", [*NEW, "-S", "epochs=1.5"], "epochs takes an integer"),
    Case("epochs-past-limit", [*NEW, "-S", "epochs=10000000"], "past the limit of 1_000_000"),
    Case("iterations-negative", [*NEW, "-S", "iterations=-1"], "iterations must be >= 0"),
    Case("batch-size-zero", [*NEW, "-S", "batch_size=0"], "batch_size must be >= 1"),
    Case("batch-size-past-limit", [*NEW, "-S", "batch_size=100000000"], "past the limit of 1_000_000"),
    Case("grad-accum-zero", [*NEW, "-S", "grad_accum=0"], "grad_accum must be >= 1"),
    Case("weight-decay-negative", [*NEW, "-S", "weight_decay=-1"], "weight_decay must be >= 0"),
    Case("weight-decay-inf", [*NEW, "-S", "weight_decay=inf"], "weight_decay must be a finite number"),
    Case("max-grad-norm-nan", [*NEW, "-S", "max_grad_norm=nan"], "max_grad_norm must be a finite number"),
    Case("betas-one-value", [*NEW, "-S", "betas=[0.9]"], "betas takes 2 values"),
    Case("betas-out-of-range", [*NEW, "-S", "betas=[0.9,1.5]"], "betas must be two numbers in [0, 1)"),
    Case("optimizer-unknown", [*NEW, "-S", "optimizer=lbfgs"], "optimizer must be one of adamw, adam, sgd"),
    Case("scheduler-unknown", [*NEW, "-S", "scheduler=step"], "scheduler must be one of constant, cosine"),
    Case("amp-fp16-on-cpu", [*NEW, "-S", "amp=fp16", "--device", "cpu"], "amp=fp16 needs a CUDA device"),
    Case("amp-unknown", [*NEW, "-S", "amp=fp8"], "amp must be one of none, bf16, fp16"),
    Case("nonfinite-policy-unknown", [*NEW, "-S", "nonfinite_loss=maybe"], "nonfinite_loss must be one of stop, skip"),
    Case("rank-1e14", [*NEW, "-s", "lora", "-S", "rank=100000000000000"], "rank = 100000000000000 is past the limit of 16_384"),
    Case("rank-past-limit", [*NEW, "-s", "lora", "-S", "rank=20000"], "past the limit of 16_384"),
    Case("rank-zero", [*NEW, "-s", "lora", "-S", "rank=0"], "rank must be >= 1"),
    Case("setting-unknown", [*NEW, "-S", "momentum=0.5"], "no selected strategy has a setting 'momentum'"),
    Case("setting-no-key", [*NEW, "-S", "=3"], "expected key=value"),
    Case("setting-no-value", [*NEW, "-S", "lr"], "expected key=value"),
    Case("setting-other-strategy", [*NEW, "-S", "lora.rank=4"], "no selected strategy has a setting 'lora.rank'"),
    # ---- --kv-cache: validated with everything else, before any file -------------------------------------------------------------------------
    Case("kv-cache-empty", [*NEW, "--kv-cache", ""], "--kv-cache is empty"),
    Case("kv-cache-blank", [*NEW, "--kv-cache", "  "], "--kv-cache is empty"),
    Case("kv-cache-no-budget", [*NEW, "--kv-cache", "d2o"], "bad --kv-cache 'd2o': expected full, d2o:BUDGET"),
    Case("kv-cache-budget-zero", [*NEW, "--kv-cache", "d2o:0"], "bad --kv-cache 'd2o:0'"),
    Case("kv-cache-budget-negative", [*NEW, "--kv-cache", "h2o:-0.5"], "bad --kv-cache 'h2o:-0.5'"),
    Case("kv-cache-budget-nan", [*NEW, "--kv-cache", "streaming:nan"], "bad --kv-cache 'streaming:nan'"),
    Case("kv-cache-budget-inf", [*NEW, "--kv-cache", "d2o:inf"], "bad --kv-cache 'd2o:inf'"),
    Case("kv-cache-budget-overflow", [*NEW, "--kv-cache", "d2o:" + "9" * 400], "(404 characters)"),
    Case("kv-cache-budget-word", [*NEW, "--kv-cache", "d2o:half"], "bad --kv-cache 'd2o:half'"),
    Case("kv-cache-unknown-policy", [*NEW, "--kv-cache", "lru:0.2"], "bad --kv-cache 'lru:0.2'"),
    Case("kv-cache-path", [*NEW, "--kv-cache", "d2o:../../escaped"], "bad --kv-cache 'd2o:../../escaped'"),
    Case("kv-cache-5000-chars", [*NEW, "--kv-cache", "x" * 5000], "(5000 characters)"),
    Case("kv-cache-not-an-llm", [*NEW, "--kv-cache", "d2o:0.2"], "--kv-cache d2o:0.2 needs a causal LM backbone that generates"),
    Case("kv-cache-long-spelling-not-an-llm", [*NEW, "--kv-cache", "d2o:0." + "2" * 300], "--kv-cache d2o:0.2222222222222222 needs a causal LM"),
    Case("overwrite-kv-cache-bad", [*FIN, "--overwrite", "--kv-cache", "d2o:0"], "bad --kv-cache 'd2o:0'"),
    Case("overwrite-kv-cache-not-an-llm", [*FIN, "--overwrite", "--kv-cache", "h2o:0.5"], "needs a causal LM backbone"),
    # ---- existing runs: nothing is destroyed by a run that cannot start ---------------------------------------------------------------------
    Case("finished-without-flag", FIN, "already holds a run; pass --resume"),
    Case("overwrite-epochs-zero", [*FIN, "--overwrite", "-S", "epochs=0"], "epochs must be >= 1"),
    Case("overwrite-missing-backbone", [*FIN, "--overwrite", "--backbone", "nope:1"], "unknown backbone 'nope:1'"),
    Case("overwrite-mlp-zero", [*FIN, "--overwrite", "--backbone", "mlp:0"], "widths must be positive"),
    Case("overwrite-lr-nan", [*FIN, "--overwrite", "-S", "lr=nan"], "lr must be a finite number"),
    Case("overwrite-amp-fp16", [*FIN, "--overwrite", "-S", "amp=fp16"], "amp=fp16 needs a CUDA device"),
    Case("overwrite-data-root-missing", [*FIN, "--overwrite", "--data-root", "nowhere"], "does not exist"),
    Case("resume-finished-other-backbone", [*FIN, "--resume", "--backbone", "mlp:8"], "already finished with other settings (backbone)"),
    Case("resume-finished-old-version", ["run", "bench/v2/digits-tiny.toml", "--out", "runs", "--seed", "0", "--resume"],
         "finished under version 1 of benchmark digits-tiny, now at version 2", prepare=write("bench/v2/digits-tiny.toml", TINY_BENCH.replace("version = 1", "version = 2"))),
    Case("resume-results-unreadable", [*FIN, "--resume"], "not a readable results file", prepare=write(f"runs/{BENCH}/finetune/seed-0/results.json", "{")),
    Case("resume-partial-other-backbone", [*PART, "--resume", "--backbone", "mlp:8"], "started with a different backbone"),
    # ---- a run directory held by another process ------------------------------------------------------------------------------------------
    Case("lock-held-new", [*RUN, "--seed", "0", "--overwrite"], "is in use by process 4242 on elsewhere", status=3, prepare=hold_lock("seed-0")),
    Case("lock-held-resume", [*PART, "--resume"], "is in use by process 4242", status=3, prepare=hold_lock("seed-1")),
    Case("lock-held-fresh", NEW, "is in use by process 4242", status=3, prepare=hold_lock("seed-7")),
    # ---- benchmark files ---------------------------------------------------------------------------------------------------------------------
    Case("toml-version-string", BAD, "version must be an integer, got 'abc'", prepare=bench_with("version = 1", 'version = "abc"')),
    Case("toml-version-negative", BAD, "version must be a non-negative integer", prepare=bench_with("version = 1", "version = -1")),
    Case("toml-seeds-strings", BAD, "each entry of seeds must be an integer, got 'a'", prepare=bench_with('strategies = ["finetune"]', 'strategies = ["finetune"]\nseeds = ["a"]')),
    Case("toml-seeds-empty", BAD, "seeds must be a non-empty list", prepare=bench_with('strategies = ["finetune"]', 'strategies = ["finetune"]\nseeds = []')),
    Case("toml-seeds-repeated", BAD, "seeds must be a non-empty list of distinct integers", prepare=bench_with('strategies = ["finetune"]', 'strategies = ["finetune"]\nseeds = [1, 1]')),
    Case("toml-seed-huge", BAD, "seeds are integers from 0 to", prepare=bench_with('strategies = ["finetune"]', 'strategies = ["finetune"]\nseeds = [99999999999]')),
    Case("toml-not-utf8", BAD, "it is not UTF-8 text", prepare=write("bench/bad.toml", TINY_BENCH.encode().replace(b"Three", b"Thr\xff\xfee"))),
    Case("toml-syntax", BAD, "cannot read benchmark file", prepare=bench_with("version = 1", "version = = 1")),
    Case("toml-missing-tasks", BAD, "missing required key 'tasks'", prepare=write("bench/bad.toml", TINY_BENCH.split("[[tasks]]")[0])),
    Case("toml-unknown-key", BAD, "unknown key(s) colour", prepare=bench_with("version = 1", 'version = 1\ncolour = "red"')),
    Case("toml-tasks-empty-list", BAD, "has no trained task", prepare=write("bench/bad.toml", "tasks = []\n" + TINY_BENCH.split("[[tasks]]")[0])),
    Case("toml-task-without-loader", BAD, "each [[tasks]] entry needs name and loader", prepare=bench_with('loader = "sklearn-digits"', "")),
    Case("toml-task-empty-name", BAD, "task names are non-empty strings", prepare=bench_with('name = "a"', 'name = ""')),
    Case("toml-task-metric", BAD, "metric of task 'a' must be one of", prepare=bench_with('name = "a"', 'name = "a"\nmetric = "bleu"')),
    Case("toml-task-eval-only-string", BAD, "eval_only must be true or false", prepare=bench_with('name = "a"', 'name = "a"\neval_only = "yes"')),
    Case("toml-task-names-repeat", BAD, "repeats task names: a", prepare=bench_with('name = "b"', 'name = "a"')),
    Case("toml-protocol", BAD, "protocol of benchmark 'bad' must be one of", prepare=bench_with('"class-incremental"', '"other"')),
    Case("toml-backbone-empty", BAD, "backbone must be a backbone spec", prepare=bench_with('backbone = "mlp:16"', 'backbone = ""')),
    Case("toml-strategies-string", BAD, "strategies must be a list of strategy names", prepare=bench_with('strategies = ["finetune"]', 'strategies = "finetune"')),
    Case("toml-description-number", BAD, "description must be a string",
         prepare=bench_with('description = "Three tasks of split digits, one epoch each, for the safety battery."', "description = 5")),
    Case("toml-metrics-unknown", BAD, "unknown metric(s) ['nope']", prepare=bench_with('strategies = ["finetune"]', 'strategies = ["finetune"]\nmetrics = ["nope"]')),
    Case("toml-train-lr-inf", BAD, "lr must be a finite number, got inf", prepare=bench_with("lr = 0.01", "lr = inf")),
    Case("toml-train-lr-zero", BAD, "lr must be a positive number", prepare=bench_with("lr = 0.01", "lr = 0.0")),
    Case("toml-train-epochs-string", BAD, "epochs must be an integer, got '5'", prepare=bench_with("epochs = 1", 'epochs = "5"')),
    Case("toml-train-batch-zero", BAD, "batch_size must be >= 1", prepare=bench_with("batch_size = 64", "batch_size = 0")),
    Case("toml-train-optimizer-number", BAD, "optimizer must be one of", prepare=bench_with("lr = 0.01", "lr = 0.01\noptimizer = 3")),
    Case("toml-train-unknown-setting", BAD, "unknown train setting 'speed'", prepare=bench_with("lr = 0.01", "lr = 0.01\nspeed = 2")),
    Case("toml-train-not-table", BAD, "train must be a table", prepare=write("bench/bad.toml", TINY_BENCH.replace("[train]\nepochs = 1\nbatch_size = 64\nlr = 0.01\n", "train = 3\n"))),
    Case("toml-unknown-loader", BAD, "unknown loader 'nope'", prepare=bench_with('loader = "sklearn-digits"', 'loader = "nope"')),
    # run config files (clbench run --config FILE): checked completely before anything runs
    Case("runcfg-missing", [*CFG, "cfg/missing.toml"], "run config cfg/missing.toml not found"),
    Case("runcfg-folder", [*CFG, "cfg"], "is a folder; give a .toml file", prepare=write("cfg/run.toml", RUN_CFG)),
    Case("runcfg-syntax", [*CFG, "cfg/run.toml"], "cfg/run.toml is not valid TOML", prepare=write("cfg/run.toml", "seeds = = 1\n")),
    Case("runcfg-unknown-key", [*CFG, "cfg/run.toml"], "unknown key(s) 'rank' (strategy settings go in a [settings] table)",
         prepare=write("cfg/run.toml", RUN_CFG + "rank = 4\n")),
    Case("runcfg-seeds-strings", [*CFG, "cfg/run.toml"], "'seeds' must be a non-empty list of integers, got ['a']",
         prepare=write("cfg/run.toml", RUN_CFG.replace("seeds = [7]", 'seeds = ["a"]'))),
    Case("runcfg-seeds-empty", [*CFG, "cfg/run.toml"], "'seeds' must be a non-empty list", prepare=write("cfg/run.toml", RUN_CFG.replace("seeds = [7]", "seeds = []"))),
    Case("runcfg-strategies-number", [*CFG, "cfg/run.toml"], "'strategies' must be a non-empty list of strings",
         prepare=write("cfg/run.toml", RUN_CFG + "strategies = 3\n")),
    Case("runcfg-device-empty", [*CFG, "cfg/run.toml"], "'device' must be a string (not empty)", prepare=write("cfg/run.toml", RUN_CFG + 'device = ""\n')),
    Case("runcfg-progress-string", [*CFG, "cfg/run.toml"], "'progress' must be true or false, got 'no'", prepare=write("cfg/run.toml", RUN_CFG + 'progress = "no"\n')),
    Case("runcfg-settings-not-table", [*CFG, "cfg/run.toml"], "'settings' must be a table", prepare=write("cfg/run.toml", RUN_CFG + "settings = 3\n")),
    Case("runcfg-setting-unknown", [*CFG, "cfg/run.toml"], "no selected strategy has a setting 'colour'",
         prepare=write("cfg/run.toml", RUN_CFG + '[settings]\ncolour = "red"\n')),
    Case("runcfg-setting-bad-value", [*CFG, "cfg/run.toml"], "epochs takes an integer, got '\"many\"'",
         prepare=write("cfg/run.toml", RUN_CFG + '[settings.finetune]\nepochs = "many"\n')),
    Case("runcfg-setting-nested", [*CFG, "cfg/run.toml"], "setting 'finetune.deep' is a table",
         prepare=write("cfg/run.toml", RUN_CFG + "[settings.finetune.deep]\nx = 1\n")),
    Case("runcfg-setting-date", [*CFG, "cfg/run.toml"], "setting 'epochs' is a date", prepare=write("cfg/run.toml", RUN_CFG + "[settings]\nepochs = 2026-01-01\n")),
    Case("runcfg-no-benchmark", ["run", "--config", "cfg/run.toml"], "no benchmark: give one",
         prepare=write("cfg/run.toml", RUN_CFG.replace(f'benchmark = "{B}"\n', ""))),
    Case("runcfg-unknown-logger", [*CFG, "cfg/run.toml"], "unknown logger 'tensorbord'", prepare=write("cfg/run.toml", RUN_CFG + 'loggers = ["tensorbord"]\n')),
    Case("runcfg-finished-run", [*CFG, "cfg/run.toml"], "already holds", prepare=write("cfg/run.toml", RUN_CFG.replace("seeds = [7]", "seeds = [0]"))),
    Case("toml-digit-classes", BAD, "needs classes: a list of digits 0-9", prepare=bench_with("classes = [0, 1]", "classes = [11]")),
    # ---- datasets ----------------------------------------------------------------------------------------------------------------------------
    Case("idx-empty", FASHION, "is not an idx file of bytes", prepare=write(str(FASHION_RAW / "train-images-idx3-ubyte"), b"")),
    Case("idx-truncated", FASHION, "is truncated or damaged", prepare=lambda r: (r / FASHION_RAW / "train-images-idx3-ubyte").write_bytes((r / FASHION_RAW / "train-images-idx3-ubyte").read_bytes()[:500])),
    Case("idx-wrong-type", FASHION, "is not an idx file of bytes", prepare=lambda r: (r / FASHION_RAW / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x0d\x03" + (r / FASHION_RAW / "t10k-images-idx3-ubyte").read_bytes()[4:])),
    Case("idx-gz-garbage", FASHION, "is damaged (BadGzipFile", prepare=lambda r: ((r / FASHION_RAW / "train-labels-idx1-ubyte").unlink(), (r / FASHION_RAW / "train-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8bnot gzip at all"))),
    Case("idx-gz-truncated", FASHION, "is damaged (EOFError", prepare=lambda r: ((r / FASHION_RAW / "train-labels-idx1-ubyte").unlink(), (r / FASHION_RAW / "train-labels-idx1-ubyte.gz").write_bytes(gzip_bytes(idx_labels([0, 1] * 15))[:-12]))),
    Case("idx-label-count", FASHION, "do not match", prepare=write(str(FASHION_RAW / "train-labels-idx1-ubyte"), idx_labels([0, 1, 2]))),
    Case("idx-label-range", FASHION, "do not match", prepare=write(str(FASHION_RAW / "t10k-labels-idx1-ubyte"), idx_labels([40] * 20))),
    Case("imagenet-r-empty-classes", ["run", "bench/imagenet-r.toml", "--out", "runs", "--no-progress", "--data-root", "inr"], "has no train examples",
         prepare=lambda r: [shutil.rmtree(r / "inr" / "imagenet-r" / w) or (r / "inr" / "imagenet-r" / w).mkdir() for w in WNIDS]),
    Case("imagenet-r-corrupt-jpeg", ["run", "bench/imagenet-r.toml", "--out", "runs", "--no-progress", "--data-root", "inr"], "cannot be read",
         status=2, prepare=lambda r: [(r / "inr" / "imagenet-r" / w / f"{i}.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated") for w in WNIDS for i in range(3)]),
    Case("imagenet-r-missing", ["run", "bench/imagenet-r.toml", "--out", "runs", "--no-progress", "--data-root", "fashion"], "dataset ImageNet-R not found"),
    # ---- results files for clbench report ----------------------------------------------------------------------------------------------------
    Case("report-missing-backbone", REPORT, "missing key(s) backbone", prepare=results_with(lambda d: d.pop("backbone"))),
    Case("report-benchmark-string", REPORT, "field 'benchmark' is str, not an object", prepare=results_with(lambda d: d.update(benchmark="digits"))),
    Case("report-matrix-strings", REPORT, "field 'matrix.values[1][0]' is 'high'", prepare=results_with(lambda d: d["matrix"]["values"][1].__setitem__(0, "high"))),
    Case("report-null-row", REPORT, "field 'matrix.values[2]' is null in a complete run", prepare=results_with(lambda d: d["matrix"]["values"].__setitem__(2, None))),
    Case("report-seed-string", REPORT, "field 'seed' is 'abc', not an integer", prepare=results_with(lambda d: d.update(seed="abc"))),
    Case("report-mixed-task-counts", REPORT, "the benchmark changed without a version bump",
         prepare=lambda r: (shutil.copytree(r / RESULTS.parent, r / "results" / BENCH / "finetune" / "seed-5"),
                            edit_json(r / "results" / BENCH / "finetune" / "seed-5" / "results.json", _drop_last_task))),
    Case("report-out-is-file", [*REPORT[:-1], "afile"], "afile is a file, not a folder"),
    Case("report-out-under-file", [*REPORT[:-1], "afile/x"], "afile is a file, not a folder"),
    Case("report-running", REPORT, "run is not complete", prepare=results_with(lambda d: d.update(status="running"))),
    Case("report-status-unknown", REPORT, "field 'status' is 'done'", prepare=results_with(lambda d: d.update(status="done"))),
    Case("report-schema", REPORT, "is not 'clbench.results/1'", prepare=results_with(lambda d: d.update(schema="other/9"))),
    Case("report-not-json", REPORT, "not a readable results file", prepare=write(str(RESULTS), "{not json")),
    Case("report-json-array", REPORT, "schema 'list' is not", prepare=write(str(RESULTS), "[1, 2]")),
    Case("report-empty-file", REPORT, "not a readable results file", prepare=write(str(RESULTS), "")),
    Case("report-not-utf8", REPORT, "not a readable results file", prepare=write(str(RESULTS), b"\xff\xfe{}")),
    Case("report-deep-nesting", REPORT, "not a readable results file", prepare=write(str(RESULTS), "[" * 100_000 + "]" * 100_000)),
    Case("report-score-above-one", REPORT, "is 1.5, not a score in [0, 1]", prepare=results_with(lambda d: d["matrix"]["values"][1].__setitem__(0, 1.5))),
    Case("report-score-nan", REPORT, "is nan, not a score in [0, 1]", prepare=results_with(lambda d: d["matrix"]["values"][1].__setitem__(0, float("nan")))),
    Case("report-version-string", REPORT, "field 'benchmark.version' is '1'", prepare=results_with(lambda d: d["benchmark"].update(version="1"))),
    Case("report-tasks-not-list", REPORT, "field 'benchmark.tasks' is not a non-empty list", prepare=results_with(lambda d: d["benchmark"].update(tasks="a,b,c"))),
    Case("report-columns-mismatch", REPORT, "field 'matrix.columns' starts with", prepare=results_with(lambda d: d["matrix"].update(columns=["x", "y", "z"]))),
    Case("report-config-not-object", REPORT, "field 'strategy.config' is list", prepare=results_with(lambda d: d["strategy"].update(config=[]))),
    Case("report-metric-string", REPORT, "field 'metrics.bwt' is 'good'", prepare=results_with(lambda d: d["metrics"].update(bwt="good"))),
    Case("report-telemetry-not-list", REPORT, "field 'telemetry' is not a list of objects", prepare=results_with(lambda d: d.update(telemetry={"a": 1}))),
    Case("report-task-seconds-string", REPORT, "field 'tasks[0].train_seconds' is 'slow'", prepare=results_with(lambda d: d["tasks"][0].update(train_seconds="slow"))),
    Case("report-rows-short", REPORT, "field 'matrix.rows' is not a list of 4 row labels", prepare=results_with(lambda d: d["matrix"]["rows"].pop())),
    Case("report-strategy-name-empty", REPORT, "field 'strategy.name' is missing or not a non-empty string", prepare=results_with(lambda d: d["strategy"].update(name=""))),
    Case("report-input-missing", ["report", "nowhere", "--out", "reports"], "nowhere: no such file or directory"),
    Case("report-format-unknown", [*REPORT, "--format", "pdf"], "unknown report format(s) pdf"),
    Case("report-results-is-folder", REPORT, "no such results file", prepare=lambda r: ((r / RESULTS).unlink(), (r / RESULTS).mkdir())),
    # ---- per-example scores (examples.npz) and the newer results fields in clbench report ---------------------------------------------------
    Case("report-examples-truncated", REPORT, "examples.npz: not a readable per-example scores file", prepare=truncated(EXAMPLES, 200)),
    Case("report-examples-empty", REPORT, "examples.npz: not a readable per-example scores file", prepare=write(str(EXAMPLES), b"")),
    Case("report-examples-random-bytes", REPORT, "not a readable per-example scores file", prepare=write(str(EXAMPLES), os.urandom(2048))),
    Case("report-examples-wrong-shape", REPORT, "malformed per-example scores file (column 1 has shape (4, 3)",
         prepare=examples_with(EXAMPLES, lambda a: a.update(col_0001=a["col_0001"][:, :3]))),
    Case("report-examples-too-few-rows", REPORT, "malformed per-example scores file (column 0 has shape (2,",
         prepare=examples_with(EXAMPLES, lambda a: a.update(col_0000=a["col_0000"][:2]))),
    Case("report-examples-sizes-negative", REPORT, "malformed per-example scores file", prepare=examples_with(EXAMPLES, lambda a: a.update(sizes=-a["sizes"]))),
    Case("report-examples-missing-array", REPORT, "malformed per-example scores file", prepare=examples_with(EXAMPLES, lambda a: a.pop("col_0002"))),
    Case("report-examples-future-format", REPORT, "per-example scores format 9 is not 1", prepare=examples_with(EXAMPLES, lambda a: a.update(version=a["version"] * 0 + 9))),
    Case("report-budget-lr-string", REPORT, "field 'budget.lr' is 'fast', not a number", prepare=results_with(lambda d: d["budget"].update(lr="fast"))),
    Case("report-budget-steps-strings", REPORT, "field 'budget.steps_per_task' is not a list of step counts",
         prepare=results_with(lambda d: d["budget"].update(steps_per_task=["many"]))),
    Case("report-budget-batch-float", REPORT, "field 'budget.batch_size' is 6.5", prepare=results_with(lambda d: d["budget"].update(batch_size=6.5))),
    Case("report-budget-overrides-list", REPORT, "field 'budget.strategy_overrides' is not an object",
         prepare=results_with(lambda d: d["budget"].update(strategy_overrides=["lr"]))),
    Case("report-budget-not-object", REPORT, "field 'budget' is list, not an object", prepare=results_with(lambda d: d.update(budget=[]))),
    Case("report-train-lr-string-without-budget", REPORT, "field 'train.lr' is 'fast', not a number", prepare=results_with(_budget_without_record)),
    Case("report-intervals-reversed", REPORT, "field 'intervals.last_accuracy' is [0.9, 0.1]",
         prepare=results_with(lambda d: d["intervals"].update(last_accuracy=[0.9, 0.1]))),
    Case("report-intervals-string", REPORT, "field 'intervals.bwt' is 'tight'", prepare=results_with(lambda d: d["intervals"].update(bwt="tight"))),
    Case("report-plasticity-learned-string", REPORT, "field 'plasticity.learned' is 'yes'", prepare=results_with(lambda d: d["plasticity"].update(learned="yes"))),
    Case("report-examples-summary-sizes", REPORT, "field 'examples.sizes' is not a list of test-set sizes",
         prepare=results_with(lambda d: d["examples"].update(sizes="many"))),
    Case("report-kv-cache-string", REPORT, "field 'kv_cache' is str, not an object", prepare=results_with(lambda d: d.update(kv_cache="d2o:0.2"))),
    Case("report-kv-cache-no-policy", REPORT, "field 'kv_cache.policy' is missing", prepare=results_with(lambda d: d.update(kv_cache={"initial": {}}))),
    # ---- checkpoints at --resume -------------------------------------------------------------------------------------------------------------
    Case("ckpt-truncated", [*PART, "--resume"], "task-002.safetensors is damaged (StateFormatError: not a safetensors file",
         prepare=truncated(CKPT / "task-002.safetensors", 300)),
    Case("ckpt-random-bytes", [*PART, "--resume"], "task-002.safetensors is damaged", prepare=write(str(CKPT / "task-002.safetensors"), os.urandom(4096))),
    Case("ckpt-foreign-safetensors", [*PART, "--resume"], "without clbench's state record", prepare=foreign_safetensors({"fc1.weight": torch.zeros(2)})),
    Case("ckpt-state-names-missing-tensor", [*PART, "--resume"], "names a tensor 't9' the file does not hold",
         prepare=state_file({"model": {"$tensor": "t9"}, "strategy": {}})),
    Case("ckpt-missing-file", [*PART, "--resume"], "task-002.safetensors is damaged (the file is missing)",
         prepare=lambda r: (r / CKPT / "task-002.safetensors").unlink()),
    Case("ckpt-wrong-object", [*PART, "--resume"], "does not hold 'model' and 'strategy' states", prepare=state_file({"model": [1, 2]})),
    Case("ckpt-wrong-shape", [*PART, "--resume"], "does not fit the rebuilt run", prepare=tensor_file({"model": {"fc1.weight": torch.zeros(2, 2)}, "strategy": {}})),
    Case("ckpt-unknown-tensor", [*PART, "--resume"], "does not fit the rebuilt run", prepare=tensor_file({"model": {"nope.weight": torch.zeros(2)}, "strategy": {}})),
    # checkpoints pickled by torch.save before the safetensors format: loaded with weights_only=True
    Case("legacy-ckpt-blocked-pickle", [*PART, "--resume"], "task-002.pt is damaged (UnpicklingError",
         prepare=legacy_tensor_file({"model": {}, "strategy": {"x": Path("/")}})),
    Case("legacy-ckpt-random-bytes", [*PART, "--resume"], "task-002.pt is damaged", prepare=lambda r: (
        pointer_with(lambda p: p.update(file="task-002.pt"))(r), (r / CKPT / "task-002.pt").write_bytes(os.urandom(4096)))),
    Case("pointer-no-progress", [*PART, "--resume"], "field 'progress' is missing", prepare=pointer_with(lambda p: p.pop("progress"))),
    Case("pointer-not-json", [*PART, "--resume"], "checkpoint.json is damaged (not valid JSON)", prepare=write(str(CKPT / "checkpoint.json"), "{")),
    Case("pointer-tasks-done-99", [*PART, "--resume"], "field 'tasks_done' is 99", prepare=pointer_with(lambda p: p.update(tasks_done=99))),
    Case("pointer-tasks-done-string", [*PART, "--resume"], "field 'tasks_done' is '2'", prepare=pointer_with(lambda p: p.update(tasks_done="2"))),
    Case("pointer-file-escapes", [*PART, "--resume"], "field 'file' is '../../../../results/x.pt'", prepare=pointer_with(lambda p: p.update(file="../../../../results/x.pt"))),
    Case("pointer-file-absolute", [*PART, "--resume"], "field 'file' is '/etc/passwd'", prepare=pointer_with(lambda p: p.update(file="/etc/passwd"))),
    Case("pointer-rows-short", [*PART, "--resume"], "field 'progress.rows' has 2 rows, expected 4", prepare=pointer_with(lambda p: p["progress"].update(rows=p["progress"]["rows"][:2]))),
    Case("pointer-rows-strings", [*PART, "--resume"], "holds something other than rows of numbers", prepare=pointer_with(lambda p: p["progress"]["rows"].__setitem__(1, ["x", "y", "z"]))),
    Case("pointer-array", [*PART, "--resume"], "not a JSON object", prepare=write(str(CKPT / "checkpoint.json"), "[]")),
    Case("resume-examples-truncated", [*PART, "--resume"], "examples.npz: not a readable per-example scores file (BadZipFile",
         prepare=truncated(PART_EXAMPLES, 300)),
    Case("resume-examples-random-bytes", [*PART, "--resume"], "not a readable per-example scores file", prepare=write(str(PART_EXAMPLES), os.urandom(1024))),
    Case("resume-examples-wrong-shape", [*PART, "--resume"], "malformed per-example scores file (column 0 has shape (4, 1)",
         prepare=examples_with(PART_EXAMPLES, lambda a: a.update(col_0000=a["col_0000"][:, :1]))),
    Case("resume-examples-other-columns", [*PART, "--resume"], "does not hold the scores of the 3 evaluation(s) the checkpoint recorded",
         prepare=examples_with(PART_EXAMPLES, lambda a: (a.update(sizes=a["sizes"][:2], binary=a["binary"][:2]), a.pop("col_0002")))),
    Case("resume-examples-rows-missing", [*PART, "--resume"], "does not hold the scores of the 3 evaluation(s)",
         prepare=examples_with(PART_EXAMPLES, lambda a: a["evaluated"].__setitem__(2, 0))),
    Case("resume-examples-other-scores", [*PART, "--resume"], "it is damaged or from another run",
         prepare=examples_with(PART_EXAMPLES, lambda a: a.update(col_0000=255 - a["col_0000"]))),
    # ---- plugins -----------------------------------------------------------------------------------------------------------------------------
    Case("plugin-duplicate-strategy", [*NEW, "-s", "finetune"], "registered by several packages",
         patch=plugin("[clbench.strategies]\nfinetune = bp_dup:Ok\n", {"bp_dup": STRATEGY_OK})),
    Case("plugin-raises-at-import", [*NEW, "-s", "broken"], "failed to load (bp_broken:Nope): ImportError: no such thing",
         patch=plugin("[clbench.strategies]\nbroken = bp_broken:Nope\n", {"bp_broken": "raise ImportError('no such thing')\n"})),
    Case("plugin-exits-at-import", [*NEW, "-s", "exiter"], "it called sys.exit(3) while being imported",
         patch=plugin("[clbench.strategies]\nexiter = bp_exit:Nope\n", {"bp_exit": "import sys\nsys.exit(3)\n"})),
    Case("plugin-not-a-strategy", [*NEW, "-s", "notone"], "is not a clbench.api.Strategy subclass",
         patch=plugin("[clbench.strategies]\nnotone = bp_not:Nope\n", {"bp_not": "Nope = 3\n"})),
    Case("plugin-argument-slash", [*NEW, "-s", "argy:../../escaped"], "unknown strategy 'argy:../../escaped'",
         patch=plugin("[clbench.strategies]\nargy = bp_argy:Argy\n", {"bp_argy": ARGY})),
    Case("plugin-argument-control-char", [*NEW, "-s", "argy:a\x01b"], "cannot name a folder",
         patch=plugin("[clbench.strategies]\nargy = bp_argy2:Argy\n", {"bp_argy2": ARGY})),
    Case("plugin-argument-too-long", [*NEW, "-s", "argy:" + "a" * 200], "is longer than 100 characters",
         patch=plugin("[clbench.strategies]\nargy = bp_argy3:Argy\n", {"bp_argy3": ARGY})),
    Case("plugin-duplicate-backbone", NEW, "pick one with --backbone DIST/mlp:16, e.g. --backbone clbench/mlp:16",
         patch=plugin("[clbench.backbones]\nmlp = bp_mlp:build\n", {"bp_mlp": BACKBONE_NOT})),
    Case("plugin-backbone-not-a-backbone", [*NEW, "--backbone", "thing:1"], "returned object, not a clbench.api.Backbone",
         patch=plugin("[clbench.backbones]\nthing = bp_thing:build\n", {"bp_thing": BACKBONE_NOT})),
    Case("plugin-backbone-exits", [*NEW, "--backbone", "quits:1"], "it called sys.exit(0) while being imported",
         patch=plugin("[clbench.backbones]\nquits = bp_quits:build\n", {"bp_quits": "raise SystemExit(0)\n"})),
    # ---- file-system faults ------------------------------------------------------------------------------------------------------------------
    Case("disk-full-config", NEW, "config.json: the disk is full", status=1, patch=faults(errno.ENOSPC, "config.json")),
    Case("disk-full-row-0", NEW, "results.json: the disk is full", status=1, patch=faults(errno.ENOSPC, "results.json")),
    Case("disk-full-checkpoint-1", NEW, "task-001.safetensors: the disk is full", status=1, patch=faults(errno.ENOSPC, "task-001.safetensors")),
    Case("disk-full-pointer-1", NEW, "checkpoint.json: the disk is full", status=1, patch=faults(errno.ENOSPC, "checkpoint.json")),
    Case("io-error-results", NEW, "results.json: an I/O error occurred", status=1, patch=faults(errno.EIO, "results.json")),
    Case("quota-checkpoint", NEW, "the disk quota is exceeded", status=1, patch=faults(errno.EDQUOT, "task-001.safetensors")),
    Case("file-size-limit", NEW, "the file-size limit was reached", status=1, patch=faults(errno.EFBIG, "task-001.safetensors")),
    Case("read-only-mid-run", NEW, "the file system is read-only", status=1, patch=faults(errno.EROFS, "config.json")),
    Case("no-free-space", NEW, "not enough free space", status=1, patch=lambda mp, r: no_free_space(mp)),
    Case("overwrite-disk-full-config", [*FIN, "--overwrite"], "the earlier run in runs/digits-tiny/finetune/seed-0 was restored", status=1,
         patch=faults(errno.ENOSPC, "config.json")),
    Case("overwrite-disk-full-checkpoint", [*FIN, "--overwrite"], "the earlier run in runs/digits-tiny/finetune/seed-0 was restored", status=1,
         patch=faults(errno.ENOSPC, "task-001.safetensors")),
    Case("overwrite-io-error-row-0", [*FIN, "--overwrite"], "was restored", status=1, patch=faults(errno.EIO, "results.json")),
    Case("overwrite-no-free-space", [*FIN, "--overwrite"], "was restored", status=1, patch=lambda mp, r: no_free_space(mp)),
    Case("resume-disk-full", [*PART, "--resume"], "task-003.safetensors: the disk is full; free some space and rerun; runs/digits-tiny/finetune/seed-1 is as it was",
         status=1, patch=faults(errno.ENOSPC, "task-003.safetensors")),
    Case("resume-io-error-pointer", [*PART, "--resume"], "is as it was", status=1, patch=faults(errno.EIO, "checkpoint.json")),
    Case("resume-of-nothing-disk-full", [*NEW, "--resume"], "its folder runs/digits-tiny/finetune/seed-7 was removed", status=1,
         patch=faults(errno.ENOSPC, "results.json")),
    Case("disk-full-examples", NEW, "examples.npz: the disk is full", status=1, patch=faults(errno.ENOSPC, "examples.npz")),
    Case("overwrite-disk-full-examples", [*FIN, "--overwrite"], "the earlier run in runs/digits-tiny/finetune/seed-0 was restored", status=1,
         patch=faults(errno.ENOSPC, "examples.npz")),
    Case("resume-disk-full-examples", [*PART, "--resume"], "examples.npz: the disk is full; free some space and rerun; runs/digits-tiny/finetune/seed-1 is as it was",
         status=1, patch=faults(errno.ENOSPC, "examples.npz")),
    Case("report-disk-full", REPORT, "the disk is full", status=1, patch=faults(errno.ENOSPC, "report.md")),
    # ---- export, eval and check (issue 18): refused before anything is written -----------------------------------------------------------------
    Case("export-unfinished", ["export", str(PARTDIR), "--format", "safetensors", "--out", "exp"], "has not finished (status 'running')"),
    Case("export-format-for-kind", ["export", str(FINDIR), "--format", "hf", "--out", "exp"], "'mlp:16' is a classic backbone (use --format safetensors)"),
    Case("export-unknown-format", ["export", str(FINDIR), "--format", "onnx"], "invalid choice: 'onnx'"),
    Case("export-out-not-empty", ["export", str(FINDIR), "--format", "safetensors", "--out", "bench"], "--out bench is not empty"),
    Case("export-out-is-file", ["export", str(FINDIR), "--format", "safetensors", "--out", B], f"--out {B} is a file"),
    Case("export-out-inside-run", ["export", str(FINDIR), "--format", "safetensors", "--out", str(FINDIR / "x")], "is inside the run directory"),
    Case("export-not-a-run", ["export", "bench", "--format", "safetensors", "--out", "exp"], "bench is not a run directory"),
    Case("export-damaged-checkpoint", ["export", str(FINDIR), "--format", "safetensors", "--out", "exp"], "is damaged",
         prepare=lambda root: truncated(FINDIR / "checkpoint" / json.loads((root / FINDIR / "checkpoint" / "checkpoint.json").read_text())["file"], 100)(root)),
    Case("export-no-checkpoint", ["export", str(FINDIR), "--format", "safetensors", "--out", "exp"], "has no checkpoint after its last task",
         prepare=lambda root: (root / FINDIR / "checkpoint" / "checkpoint.json").unlink()),
    Case("export-no-free-space", ["export", str(FINDIR), "--format", "safetensors", "--out", "exports/deep/exp"], "not enough free space", status=1,
         patch=lambda mp, r: no_free_space(mp)),
    Case("export-disk-full", ["export", str(FINDIR), "--format", "safetensors", "--out", "exports/deep/exp"], "the disk is full", status=1,
         patch=faults(errno.ENOSPC, "export.json")),
    Case("eval-unfinished", ["eval", str(PARTDIR), "--benchmark", B], "has not finished"),
    Case("eval-no-source", ["eval", "nowhere", "--benchmark", B], "'nowhere' is not a folder nor a backbone spec"),
    Case("eval-neither-run-nor-export", ["eval", "bench", "--benchmark", B], "bench is neither a run directory"),
    Case("eval-unknown-benchmark", ["eval", str(FINDIR), "--benchmark", "nobench"], "unknown benchmark 'nobench'"),
    Case("eval-other-label-space", ["eval", str(FINDIR), "--benchmark", "bench/fashion.toml", "--data-root", "fashion"], "trained for another label space"),
    Case("eval-damaged-export", ["eval", "exp", "--benchmark", B], "exp/export.json is damaged", prepare=write("exp/export.json", "{not json")),
    Case("check-unknown-benchmark", ["check", "nobench"], "unknown benchmark 'nobench'"),
    Case("check-bad-backbone", ["check", B, "--backbone", "nokind:1"], "nokind"),
    # ---- a training loss that becomes non-finite ---------------------------------------------------------------------------------------------
    Case("nan-loss-new", [*NEW, "-S", "lr=1e30", "-S", "epochs=3"], "training loss became nan in task 1 (a) at step", status=1),
    Case("nan-loss-skip", [*NEW, "-S", "lr=1e30", "-S", "epochs=3", "-S", "nonfinite_loss=skip"], "training loss stayed non-finite in task 1 (a)", status=1),
    Case("nan-loss-overwrite", ["run", "bench/nan/digits-tiny.toml", "--out", "runs", "--no-progress", "--seed", "0", "--overwrite"], "was restored",
         status=1, prepare=write("bench/nan/digits-tiny.toml", TINY_BENCH.replace("lr = 0.01", "lr = 1e30\nepochs = 3").replace("epochs = 1\n", ""))),
    # ---- signals (real processes) --------------------------------------------------------------------------------------------------------------
    Case("sigterm-new", [*NEW, "-S", "epochs=300"], "terminated (SIGTERM); its folder runs/digits-tiny/finetune/seed-7-S-epochs=300 was removed",
         status=143, signal=signal.SIGTERM, wait_for=f"runs/{BENCH}/finetune/seed-7-S-epochs=300/results.json"),
    Case("sigint-new", [*NEW, "-S", "epochs=300"], "interrupted; its folder", status=130, signal=signal.SIGINT,
         wait_for=f"runs/{BENCH}/finetune/seed-7-S-epochs=300/results.json"),
    # The same benchmark name and version with a long budget: an --overwrite of the finished run's own folder (-S would name another folder).
    Case("sigterm-overwrite", ["run", "bench/slow/digits-tiny.toml", "--out", "runs", "--no-progress", "--seed", "0", "--overwrite"],
         "terminated (SIGTERM); the earlier run in runs/digits-tiny/finetune/seed-0 was restored", status=143, signal=signal.SIGTERM,
         wait_for=f"runs/{BENCH}/finetune/.seed-0.previous", prepare=write("bench/slow/digits-tiny.toml", TINY_BENCH.replace("epochs = 1\n", "epochs = 300\n"))),
    Case("sigterm-resume", [*SLOW, "--resume"], "terminated (SIGTERM); runs/digits-tiny/finetune/seed-2-S-epochs=300 is as it was",
         status=143, signal=signal.SIGTERM, wait_for=f"runs/{BENCH}/finetune/seed-2-S-epochs=300/run.log:resumed"),
]


def _drop_last_task(data: dict[str, Any]) -> None:
    data["benchmark"]["tasks"].pop()
    data["matrix"]["columns"].pop()
    data["matrix"]["rows"].pop()
    data["matrix"]["values"] = [row[:-1] for row in data["matrix"]["values"][:-1]]


def _slow_partial(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run with epochs=300 whose tasks 1-2 are checkpointed (trained instantly), so the resumed
    task 3 trains long enough to be signalled."""
    from clbench import runner
    from clbench.runner import RunOptions, run
    from clbench.training import TaskStats

    calls = {"n": 0}

    def fake_train(*args: Any, **kwargs: Any) -> TaskStats:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return TaskStats(steps=1, examples=1, final_loss=0.0, loss_curve=[0.0])

    with monkeypatch.context() as patch:
        patch.setattr(runner, "train_task", fake_train)
        with pytest.raises(KeyboardInterrupt):
            run(RunOptions(benchmark=str(root / B), strategy="finetune", seed=2, out=root / "runs", progress=False, overrides={"epochs": "300"}))


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    with pytest.MonkeyPatch.context() as monkeypatch:
        root = build_template(tmp_path_factory.mktemp("battery") / "template", monkeypatch)
        _slow_partial(root, monkeypatch)
    return root


def test_battery_has_at_least_100_distinct_cases() -> None:
    assert len({c.id for c in CASES}) == len(CASES) >= 100


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, template: Path, tmp_path: Path, cli: Any, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest,
                   capsys: pytest.CaptureFixture[str]) -> None:
    from clbench import registry

    root = tmp_path / "env"
    shutil.copytree(template, root)
    monkeypatch.chdir(root)
    if case.prepare is not None:
        cleanup = case.prepare(root)
        if callable(cleanup):
            request.addfinalizer(cleanup)
    request.addfinalizer(registry.refresh)
    before = snapshot(root)
    monkeypatch.setattr(logging.root, "handlers", [])  # main() attaches its stderr handler to this test's capture
    if case.patch is not None:
        case.patch(monkeypatch, root)
    if case.signal is None:
        try:
            status, _, err = cli(*case.args)
        except SystemExit as exc:  # argparse's own errors leave main() through SystemExit(2)
            status, err = int(exc.code or 0), capsys.readouterr().err
    else:
        status, err = _signalled(case, root)
    lines = err.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("clbench:")), None)
    assert start is not None, err
    message = lines[start:]
    assert status == case.status, err
    assert "Traceback" not in err and "internal error" not in err, err
    assert 1 <= len(message) <= 6, err
    assert case.message in " ".join(message), err
    assert_unchanged(before, snapshot(root))


def _signalled(case: Case, root: Path) -> tuple[int, str]:
    path, _, text = case.wait_for.partition(":")
    proc = subprocess.Popen([*clbench_command(), *case.args], cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    try:
        while not ((root / path).exists() and (not text or text in (root / path).read_text(errors="replace"))):
            assert proc.poll() is None, f"finished before the signal: {proc.stderr.read() if proc.stderr else ''}"
            assert time.monotonic() < deadline, "the run never reached the point to signal"
            time.sleep(0.02)
        proc.send_signal(case.signal)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, err
