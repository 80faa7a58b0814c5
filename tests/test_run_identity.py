"""One run identity: folders name their non-default settings, results record the identity, and every
"is this run already there?" check compares identities (old folders and results still load)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from clbench.errors import UsageError
from clbench.identity import identity_hash, results_identity, run_folder_name, settings_diff, settings_suffix
from clbench.preflight import RunOptions, existing_complete
from clbench.report.aggregate import load_groups
from clbench.runner import run


def _run(bench: Path, out: Path, **kw) -> dict:
    return run(RunOptions(benchmark=str(bench), strategy=kw.pop("strategy", "finetune"), out=out, progress=False, **kw))


def test_folder_names_name_the_non_default_settings() -> None:
    from clbench import registry
    from clbench.config import build_config

    cls, _ = registry.get_strategy("lora")
    assert settings_diff(build_config(cls.Config, {}, "lora")) == {}
    assert run_folder_name(3) == "seed-3"
    a = settings_diff(build_config(cls.Config, {"lr": "5e-4", "rank": "4"}, "lora"))
    b = settings_diff(build_config(cls.Config, {"rank": "4", "lr": "0.0005"}, "lora"))
    assert a == b == {"lr": 0.0005, "rank": 4}  # resolved values: spelling and order do not matter
    assert run_folder_name(0, "", a) == "seed-0-S-lr=0.0005,rank=4"
    from clbench.rundir import run_directory

    assert run_directory(Path("o"), "b", "lora", 0, "d2o:0.2", a).name == "seed-0-kv-d2o-0.2-S-lr=0.0005,rank=4"
    long = {"targets": ["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj"]}
    assert settings_suffix(long).startswith("-S-h") and len(settings_suffix(long)) == 4 + 12
    assert settings_suffix({"lr": 0.1}) != settings_suffix({"lr": 0.2})


def test_runs_with_other_settings_coexist_and_report_apart(small_digits: Path, tmp_path: Path) -> None:
    base = _run(small_digits, tmp_path)
    fast = _run(small_digits, tmp_path, overrides={"lr": "0.05"})
    base_dir, fast_dir = Path(base["_path"]).parent, Path(fast["_path"]).parent
    assert base_dir.name == "seed-0" and fast_dir.name == "seed-0-S-lr=0.05" and base_dir.parent == fast_dir.parent
    config = json.loads((fast_dir / "config.json").read_text())
    assert config["settings"] == {"lr": 0.05} and config["strategy"]["config"]["lr"] == 0.05
    on_disk = json.loads(Path(fast["_path"]).read_text())
    assert on_disk["identity"]["strategy"]["config"]["lr"] == 0.05 and on_disk["run_id"] == identity_hash(on_disk["identity"])
    assert on_disk["run_id"] != json.loads(Path(base["_path"]).read_text())["run_id"]
    # each is found by --resume as complete, without training again
    assert _run(small_digits, tmp_path, overrides={"lr": "5e-2"}, resume=True)["updated"] == fast["updated"]
    assert _run(small_digits, tmp_path, resume=True)["updated"] == base["updated"]
    (group,) = load_groups([tmp_path])
    assert sorted(group.strategies) == ["finetune lr=0.05", "finetune lr=default"]  # labelled by the settings that differ
    assert any("reported as finetune lr=0.05, finetune lr=default" in note for note in group.notes)


def test_folders_and_results_from_before_identity_still_load(small_digits: Path, tmp_path: Path) -> None:
    done = _run(small_digits, tmp_path, overrides={"lr": "0.05"})
    new_dir = Path(done["_path"]).parent
    legacy = new_dir.with_name("seed-0")  # where a run with -S settings lived before folders named them
    shutil.move(new_dir, legacy)
    data = json.loads((legacy / "results.json").read_text())
    del data["identity"], data["run_id"]
    (legacy / "results.json").write_text(json.dumps(data))
    options = RunOptions(benchmark=str(small_digits), strategy="finetune", out=tmp_path, overrides={"lr": "0.05"}, resume=True, progress=False)
    assert existing_complete(tmp_path, options)["_path"] == str(legacy / "results.json")
    assert results_identity(data)["strategy"]["config"]["lr"] == 0.05
    assert run(options)["updated"] == done["updated"]  # returned as it is: nothing trained, nothing moved
    assert not new_dir.exists()
    (group,) = load_groups([tmp_path])
    assert list(group.strategies) == ["finetune"]


def test_a_version_bump_is_never_returned_as_complete(small_digits: Path, tmp_path: Path) -> None:
    _run(small_digits, tmp_path)
    bumped = small_digits.with_name("v2") / small_digits.name
    bumped.parent.mkdir()
    bumped.write_text(small_digits.read_text().replace("version = 1", "version = 2"))
    options = RunOptions(benchmark=str(bumped), strategy="finetune", out=tmp_path, resume=True, progress=False)
    with pytest.raises(UsageError, match="finished under version 1 of benchmark digits-small, now at version 2"):
        existing_complete(tmp_path, options)
