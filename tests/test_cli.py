"""The command line: listing, showing, running and reporting; one-line errors with exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def test_list_and_show(cli) -> None:
    status, out, _ = cli("list")
    assert status == 0
    for name in ("digits-split", "digits-split-task-il", "quickstart", "finetune", "lora", "joint", "zeroshot", "mlp:…", "hf:…"):
        assert name in out
    status, out, _ = cli("show", "digits-split")
    assert status == 0 and "protocol: class-incremental" in out and "task 5  digits-8-9" in out
    assert "default budget: 5 epoch(s) per task: steps = 5 × ⌈train examples / 32⌉; batch 32; lr 0.001 (adamw, constant schedule)" in out
    assert "strategies may override it per backbone kind" in out
    status, out, _ = cli("show", "finetune")
    assert status == 0 and "training budget by backbone kind" in out and "  llm: lr=1e-05\n" in out and "  classic: the benchmark's\n" in out
    status, out, _ = cli("show", "lora")
    assert status == 0 and "rank = 8 (classic, llm, vit) / 16 (clip) [ours]: adapter rank r (default: per kind" in out and "merge_after_task = False" in out and "lr = None [ours]: peak learning rate." in out


def test_show_prints_the_value_per_backbone_kind_and_labels_our_defaults(cli) -> None:
    status, out, _ = cli("show", "lora")
    assert status == 0 and "alpha = 16.0 (classic, clip, vit) / 32.0 (llm) [ours]" in out  # TRACE's peft LoraConfig on LLMs
    assert "dropout = 0.0 (classic, clip, vit) / 0.1 (llm):" in out
    assert "targets = 'attention-qv' (classic, llm, vit) / 'all-linear' (clip) [ours]" in out  # CoDyRA's naive LoRA: every CLIP weight
    assert "defaults that are ours" in out and "  rank (ours): classic and ViT" in out
    status, out2, _ = cli("show", "altlora")
    assert status == 0 and "alpha = 16.0 (classic, clip, vit) / 32.0 (llm)" in out2  # lora's table
    status, out, _ = cli("show", "codyra")
    assert status == 0 and "prox = 'official'" in out and "kappa_reference_steps = 0: 0 (default, the paper and the official code)" in out
    status, out, _ = cli("show", "mora")
    assert status == 0 and "temperature = 0.05 (classic) / 0.01 (clip, vit) / 0.03 (llm) [ours]" in out


@pytest.mark.parametrize(("args", "message"), [
    (["run", "digits-splt"], "unknown benchmark 'digits-splt'; did you mean 'digits-split'"),
    (["run", "digits-split", "-s", "lroa"], "unknown strategy 'lroa'; did you mean 'lora'"),
    (["run", "digits-split", "-s", "lora", "-S", "rnk=4"], "no selected strategy has a setting 'rnk'; valid: alpha, amp, batch_size"),
    (["run", "digits-split", "-s", "lora", "-S", "rank=big"], "rank takes an integer, got 'big'"),
    (["run", "digits-split", "-s", "lora", "-S", "rank=0"], "strategy 'lora': rank must be >= 1"),
    (["run", "digits-split", "--seed", "a"], "--seed takes comma-separated integers"),
    (["run", "digits-split", "--device", "cuda:7"], "no CUDA device is available"),
    (["run", "digits-split", "--backbone", "mlp:x"], "bad MLP spec 'mlp:x'"),
    (["run", "digits-split", "--backbone", "nope:1"], "unknown backbone 'nope:1'"),
    (["show", "nothing-like-it"], "unknown benchmark or strategy 'nothing-like-it'"),
    (["report", "/no/such/dir"], "/no/such/dir: no such file or directory"),
])
def test_user_errors_are_one_line_with_status_2(cli, tmp_path: Path, args: list[str], message: str) -> None:
    status, out, err = cli(*args, *(["--out", str(tmp_path)] if args[0] == "run" else []))
    assert status == 2
    assert err.count("\n") == 1 and err.startswith("clbench: error: ") and message in err, err
    assert "Traceback" not in err and not list(tmp_path.iterdir())


def test_argparse_errors_are_one_line_too() -> None:
    clbench = str(Path(sys.executable).with_name("clbench"))
    result = subprocess.run([clbench, "run", "digits-split", "--no-such-flag"], capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "unrecognized arguments: --no-such-flag" in result.stderr
    result = subprocess.run([clbench, "run"], capture_output=True, text=True)  # the benchmark may come from --config instead
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "no benchmark: give one (clbench run BENCHMARK)" in result.stderr


def test_run_two_strategies_two_seeds_then_report(cli, small_digits: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    status, stdout, err = cli("run", small_digits, "-s", "finetune,lora", "--seed", "0,1", "--out", out, "-S", "lora.rank=4", "--no-progress")
    assert status == 0, err
    lines = [line for line in stdout.splitlines() if line.startswith(("finetune", "lora"))]
    assert len(lines) == 4
    header = next(line for line in stdout.splitlines() if line.startswith("strategy"))
    assert header.split()[:9] == ["strategy", "seed", "last", "avg-inc", "learn", "gain", "forget", "bwt", "fwt"]
    assert all(line.count("[") >= 7 and "/3 tasks" in line for line in lines), lines
    lora = json.loads((out / "digits-small" / "lora" / "seed-1-S-rank=4" / "results.json").read_text())
    assert lora["strategy"]["config"]["rank"] == 4
    status, stdout, err = cli("report", out, "--out", tmp_path / "report")
    assert status == 0, err
    folder = tmp_path / "report" / "digits-small"
    assert {p.name for p in folder.iterdir()} >= {"forgetting-curves.png", "forgetting-curves.svg", "matrix-finetune.png", "matrix-lora.svg", "report.md"}
    report = (folder / "report.md").read_text()
    assert "| finetune | 2 |" in report and "| lora | 2 |" in report and " ± " in report
    assert (folder / "plasticity-overview.png").exists() and "## Budget" in report
    assert "Intervals unavailable" not in report and "| finetune | 2 | " in report and "] | yes (" in report


def test_summary_marks_a_run_that_did_not_learn() -> None:
    from clbench.cli.summary import summary_lines

    learned = {"metrics": {"last_accuracy": 0.5, "plasticity_gain": 0.4, "forgetting_chaudhry": 0.3},
               "intervals": {"last_accuracy": [0.45, 0.55]}, "plasticity": {"learned": True, "tasks_learned": 2, "tasks": 3}}
    frozen = {"metrics": {"last_accuracy": 0.2, "plasticity_gain": 0.0, "forgetting_chaudhry": 0.0},
              "intervals": {"forgetting_chaudhry": [0.0, 0.0]}, "plasticity": {"learned": False, "tasks_learned": 0, "tasks": 3}}
    lines = summary_lines(("last_accuracy", "mtil_avg"), [("lora", 0, learned, 1.0), ("mora", 0, frozen, 2.0)])
    assert lines[0].split() == ["strategy", "seed", "last", "avg-inc", "learn", "gain", "forget", "bwt", "mtil-avg", "learned", "probes",
                                "Δ", "time", "results"]
    assert set(lines[1]) == {"-", " "}  # a rule under the header
    assert "50.0 [45.0, 55.0]" in lines[2] and "2/3 tasks" in lines[2]
    assert "0.0 [0.0, 0.0]" in lines[3] and "DID NOT LEARN (0/3)" in lines[3]
    # numbers are right-aligned: each metric column ends at the same place in the header and every row
    last_end = lines[0].index("last") + len("last")
    assert lines[2][last_end - 1] == "]" and lines[3][last_end - 4:last_end] == "20.0"
    assert "DID NOT LEARN = " in " ".join(lines[-1].split("\n"))
