"""clbench export and clbench eval: exports reload with the plain libraries and match clbench's final model;
eval reproduces a finished run's last row."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from battery_support import seed_folder
import torch

from test_llm_backbones import save_tiny_llama
from test_lora_family_llm import BENCHMARK as LLM_BENCH  # two generated skills on a tiny Llama
from test_vision_fixtures import write_two_domain_mtil


def _last_row(run_dir: Path) -> list[float]:
    return json.loads((run_dir / "results.json").read_text())["matrix"]["values"][-1]


def test_eval_reproduces_last_rows_mora_exports_its_bank_apart_and_the_report_reads_evals(cli, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    # digits-split (5 tasks) on a tiny budget: one epoch per task
    assert cli("run", "digits-split", "-s", "lora,mora", "-S", "epochs=1", "--out", out, "--no-progress")[0] == 0
    for strategy in ("lora", "mora"):
        run_dir = seed_folder(out / "digits-split" / strategy, 0)
        status, stdout, stderr = cli("eval", run_dir, "--benchmark", "digits-split", "--out", out)
        assert status == 0, stderr
        written = json.loads(Path(stdout.strip().splitlines()[-1].removeprefix("results: ")).read_text())
        assert written["kind"] == "eval" and written["matrix"]["values"] == [_last_row(run_dir)]
    assert cli("eval", run_dir, "--benchmark", "digits-split", "--out", out)[0] == 2  # exists: --overwrite needed
    # MoRA's routed bank cannot be merged: the export holds the plain backbone and the bank apart, and evaluating it gives the same row.
    status, stdout, stderr = cli("export", run_dir, "--format", "safetensors")  # default place: exports/ beside the runs folder
    export = tmp_path / "exports" / "digits-split" / "mora" / f"{run_dir.name}-safetensors"
    assert status == 0 and "not merged" in stdout, stderr
    assert {p.name for p in export.iterdir()} == {"model.safetensors", "adapters.safetensors", "adapters.json", "export.json"}
    status, _, stderr = cli("eval", export, "--benchmark", "digits-split", "--out", out)
    assert status == 0, stderr
    written = json.loads(next((out / "digits-split").glob("eval-*safetensors/results.json")).read_text())
    assert written["matrix"]["values"] == [_last_row(run_dir)]
    status, _, stderr = cli("export", run_dir, "--format", "safetensors")  # not empty now
    assert status == 2 and "--overwrite" in stderr
    assert cli("export", run_dir, "--format", "safetensors", "--overwrite")[0] == 0
    from clbench.report.aggregate import load_groups
    from clbench.report.tables import evaluation_table

    (group,) = load_groups([out])  # runs and evaluations side by side: evaluations stay out of the strategies' metrics
    assert sorted(group.strategies) == ["lora", "mora"] and len(group.evaluations) == 3
    assert [row[2:] for row in evaluation_table(group).rows][0] == tuple(f"{100 * v:.1f}" for v in _last_row(seed_folder(out / "digits-split" / "lora", 0)))
    status, _, stderr = cli("report", *(out / "digits-split").glob("eval-*"), "--out", tmp_path / "evals", "--format", "md")  # evaluations only
    text = (tmp_path / "evals" / "digits-split" / "report.md").read_text()
    assert status == 0 and "| mora run on digits-split (seed 0)" in text and "Metrics" not in text, stderr


def test_lora_merged_llm_export_loads_with_plain_transformers_and_generates_identically(cli, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from clbench.export.adapters import fold_adapters
    from clbench.finalmodel import load_final_model

    model = save_tiny_llama(tmp_path / "llm")
    bench = tmp_path / "tiny-llm.toml"
    bench.write_text(LLM_BENCH.format(model=model), encoding="utf-8")
    out = tmp_path / "runs"
    assert cli("run", bench, "-s", "lora", "-S", "merge_after_task=true", "--out", out, "--no-progress")[0] == 0
    run_dir = seed_folder(out / "tiny-llm" / "lora", 0)
    status, stdout, stderr = cli("export", run_dir, "--format", "hf", "--out", tmp_path / "hf")
    assert status == 0, stderr
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "hf")
    final = load_final_model(run_dir)
    fold_adapters(final.run.backbone.model)
    reference = final.run.backbone.model.eval()
    base = AutoModelForCausalLM.from_pretrained(model).eval()
    ids = tokenizer(["Uppercase: cat", "Plural: dog"], return_tensors="pt", padding=True)
    with torch.no_grad():
        assert torch.equal(plain(**ids).logits, reference(**ids).logits)
        assert not torch.allclose(plain(**ids).logits, base(**ids).logits)  # training changed the weights
        kwargs = {"max_new_tokens": 6, "do_sample": False, "pad_token_id": 0}
        assert torch.equal(plain.generate(**ids, **kwargs), reference.generate(**ids, **kwargs))
    status, _, stderr = cli("eval", tmp_path / "hf", "--benchmark", bench, "--out", out)
    assert status == 0, stderr
    written = json.loads(next((out / "tiny-llm").glob("eval-*hf*/results.json")).read_text())
    assert written["matrix"]["values"] == [_last_row(run_dir)]
    assert cli("export", run_dir, "--format", "safetensors", "--out", tmp_path / "st")[0] == 0  # a transformers state dict
    status, _, stderr = cli("eval", tmp_path / "st", "--benchmark", bench, "--out", out)
    assert status == 0, stderr
    assert json.loads(next((out / "tiny-llm").glob("eval-*st/results.json")).read_text())["matrix"]["values"] == [_last_row(run_dir)]
    # A backbone spec as it loads scores what the run scored before training (row 0).
    status, _, stderr = cli("eval", f"hf:{model}", "--benchmark", bench, "--out", out)
    assert status == 0, stderr
    written = json.loads(next((out / "tiny-llm").glob("eval-hf_*/results.json")).read_text())
    assert written["matrix"]["values"] == [json.loads((run_dir / "results.json").read_text())["matrix"]["values"][0]]
    # Another benchmark's tasks: how much of it the trained model keeps.
    other = tmp_path / "other-llm.toml"
    other.write_text(LLM_BENCH.format(model=model).replace('"plural"', '"last-letter"').replace("uppercase", "reverse"), encoding="utf-8")
    status, stdout, stderr = cli("eval", run_dir, "--benchmark", other, "--out", out)
    assert status == 0 and "results:" in stdout, stderr
    written = json.loads(next((out / "other-llm").glob("eval-*/results.json")).read_text())
    assert written["matrix"]["columns"] == ["reverse", "last-letter"] and written["source"]["strategy"] == "lora"


@pytest.mark.slow
def test_quickstart_lora_merged_export_loads_with_plain_transformers_and_generates_identically(cli, tmp_path: Path) -> None:
    """The README's SmolLM2 quickstart, lora with merge, on a short budget: the export reloads with
    from_pretrained, generates what clbench's final model generates, and clbench eval of the
    export reproduces the run's last row."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from clbench.finalmodel import load_final_model

    out = tmp_path / "runs"
    status, _, stderr = cli("run", "quickstart", "-s", "lora", "-S", "merge_after_task=true", "-S", "iterations=2", "--out", out, "--no-progress")
    assert status == 0, stderr
    run_dir = out / "quickstart" / "lora" / "seed-0"
    assert cli("export", run_dir, "--format", "hf", "--out", tmp_path / "hf")[0] == 0
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "hf")
    final = load_final_model(run_dir)
    backbone = final.run.backbone
    prompts = [backbone.prompt_text(e) for e in final.run.stream.experiences[0].test.examples[:4]]  # type: ignore[attr-defined]
    ids = tokenizer(prompts, return_tensors="pt", padding=True)
    kwargs = {"max_new_tokens": 8, "do_sample": False, "pad_token_id": tokenizer.pad_token_id or tokenizer.eos_token_id}
    with torch.no_grad():
        assert torch.equal(plain.generate(**ids, **kwargs), backbone.model.eval().generate(**ids, **kwargs))
    status, _, stderr = cli("eval", tmp_path / "hf", "--benchmark", "quickstart", "--out", out)
    assert status == 0, stderr
    written = json.loads(next((out / "quickstart").glob("eval-*hf*/results.json")).read_text())
    assert written["matrix"]["values"] == [_last_row(run_dir)]


def test_clip_lora_export_reloads_with_open_clip_and_matches(cli, tmp_path: Path) -> None:
    import open_clip

    from clbench.export.adapters import fold_adapters
    from clbench.finalmodel import load_final_model

    setup = write_two_domain_mtil(tmp_path)
    out = tmp_path / "runs"
    assert cli("run", setup["bench"], "-s", "lora", "--data-root", setup["data"], "--out", out, "--no-progress", "-S", "rank=2")[0] == 0
    run_dir = seed_folder(out / "mtil-tiny" / "lora", 0)
    status, _, stderr = cli("export", run_dir, "--format", "open_clip", "--out", tmp_path / "oc")
    assert status == 0, stderr
    open_clip.add_model_config(tmp_path / "oc" / "tiny-clip-test.json")
    plain, _, _ = open_clip.create_model_and_transforms("tiny-clip-test", pretrained=str(tmp_path / "oc" / "open_clip_model.safetensors"))
    final = load_final_model(run_dir, data_root=setup["data"])
    fold_adapters(final.run.backbone.model)
    images = torch.randn(2, 3, 32, 32)
    text = open_clip.get_tokenizer("tiny-clip-test")(["a photo of a cat.", "a dog"])
    with torch.no_grad():
        reference = final.run.backbone.model.eval()
        assert torch.allclose(plain.eval().encode_image(images), reference.encode_image(images), atol=1e-5)
        assert torch.allclose(plain.encode_text(text), reference.encode_text(text), atol=1e-5)
    assert cli("export", run_dir, "--format", "safetensors", "--out", tmp_path / "st")[0] == 0  # open_clip's layout too
    for folder in ("oc", "st"):
        status, _, stderr = cli("eval", tmp_path / folder, "--benchmark", setup["bench"], "--data-root", setup["data"], "--out", out)
        assert status == 0, stderr
        written = json.loads(next((out / "mtil-tiny").glob(f"eval-*{folder}/results.json")).read_text())
        assert written["matrix"]["values"][0] == pytest.approx(_last_row(run_dir), abs=1e-9)


MERGEABLE = {"finetune": 0, "lora": 1, "altlora": 1, "olora": 1, "inflora": 1, "codyra": 0, "sara": 0, "ewc": 0}
ROUTED = ("smora", "flylora")


@pytest.mark.parametrize("strategy", [*MERGEABLE, *ROUTED])
def test_every_adapter_family_exports_merged_or_apart_and_evaluates_to_the_last_row(cli, tmp_path: Path, strategy: str) -> None:
    """Fixed-update adapters fold into the weights (codyra and sara leave a plain model after each
    task, full fine-tuning wraps nothing); routed ones are exported apart and put back by eval."""
    bench = tmp_path / "two.toml"
    bench.write_text('version = 1\ndescription = "two digit tasks"\nprotocol = "class-incremental"\nbackbone = "mlp:16"\n'
                     '[train]\nepochs = 1\nbatch_size = 64\nlr = 0.01\n'
                     '[[tasks]]\nname = "a"\nloader = "sklearn-digits"\noptions = { classes = [0, 1] }\n'
                     '[[tasks]]\nname = "b"\nloader = "sklearn-digits"\noptions = { classes = [2, 3] }\n', encoding="utf-8")
    out = tmp_path / "runs"
    status, _, stderr = cli("run", bench, "-s", strategy, "--out", out, "--no-progress")
    assert status == 0, stderr
    run_dir = out / "two" / strategy / "seed-0"
    status, stdout, stderr = cli("export", run_dir, "--format", "safetensors", "--out", tmp_path / "exp")
    assert status == 0, stderr
    manifest = json.loads((tmp_path / "exp" / "export.json").read_text())
    if strategy in MERGEABLE:
        assert manifest["merged_layers"] == MERGEABLE[strategy] and manifest["unmerged_layers"] == []
        assert not (tmp_path / "exp" / "adapters.safetensors").exists()
    else:
        assert manifest["unmerged_layers"] and "not merged" in stdout and (tmp_path / "exp" / "adapters.safetensors").is_file()
    status, _, stderr = cli("eval", tmp_path / "exp", "--benchmark", bench, "--out", out)
    assert status == 0, stderr
    written = json.loads(next((out / "two").glob("eval-*exp/results.json")).read_text())
    assert written["matrix"]["values"][0] == pytest.approx(_last_row(run_dir), abs=1e-12)
