"""Run config files: ``clbench run --config FILE`` with flags over the file, and the ``run.toml``
every run writes, which runs the same run again as it is."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from battery_support import seed_folder

from clbench import registry
from clbench.config import build_config
from clbench.runconfig import dump_toml, literal, load_run_config


def test_a_config_file_runs_and_command_line_flags_override_it(cli, small_digits: Path, tmp_path: Path) -> None:
    config = tmp_path / "my-run.toml"
    config.write_text(f'benchmark = "{small_digits}"\nstrategies = ["finetune"]\nseeds = [0, 1]\nout = "{tmp_path / "runs"}"\n'
                      "progress = false\n[settings]\nepochs = 1\n[settings.finetune]\nbatch_size = 16\n", encoding="utf-8")
    status, out, err = cli("run", "--config", config, "--seed", "3", "-S", "epochs=2")
    assert status == 0, err
    runs = tmp_path / "runs" / "digits-small" / "finetune"
    assert [p.name for p in runs.iterdir() if p.is_dir()] == [seed_folder(runs, 3).name]  # --seed replaced the file's seeds
    written = tomllib.loads((seed_folder(runs, 3) / "run.toml").read_text())
    assert written["settings"]["finetune"]["epochs"] == 2 and written["settings"]["finetune"]["batch_size"] == 16
    assert written["seeds"] == [3] and written["benchmark"] == str(small_digits.resolve()) and written["device"] == "cpu"
    assert any(line.split()[:2] == ["finetune", "3"] for line in out.splitlines())


def test_the_run_toml_of_a_run_runs_it_again_as_it_ran(cli, small_digits: Path, tmp_path: Path) -> None:
    status, _, err = cli("run", small_digits, "-s", "lora", "-S", "rank=2", "-S", "epochs=2", "--seed", "5", "--out", tmp_path / "first", "--no-progress")
    assert status == 0, err
    first = seed_folder(tmp_path / "first" / "digits-small" / "lora", 5)
    status, _, err = cli("run", "--config", first / "run.toml", "--out", tmp_path / "again", "--no-progress")
    assert status == 0, err
    again = seed_folder(tmp_path / "again" / "digits-small" / "lora", 5)
    a, b = (json.loads((d / "results.json").read_text()) for d in (first, again))
    assert a["matrix"]["values"] == b["matrix"]["values"] and a["strategy"]["config"] == b["strategy"]["config"]
    identity = [{k: v for k, v in json.loads((d / "config.json").read_text()).items() if k != "options"} for d in (first, again)]
    assert identity[0] == identity[1]
    first_toml, again_toml = (tomllib.loads((d / "run.toml").read_text()) for d in (first, again))
    assert {**first_toml, "out": None} == {**again_toml, "out": None}


# avalanche is left out: importing avalanche-lib costs seconds and its config is only the wrapped class's name
@pytest.mark.parametrize("name", sorted(p.name for p in registry.plugins("strategies") if p.dist == "clbench" and p.name != "avalanche"))
def test_every_strategy_setting_round_trips_through_a_run_toml(name: str, tmp_path: Path) -> None:
    """What ``run.toml`` writes for a strategy's settings reads back to the same config."""
    cls, _ = registry.get_strategy(name)
    config = cls.Config()
    values = {k: v for k, v in config.to_dict().items() if v is not None}
    path = tmp_path / "run.toml"
    path.write_text(dump_toml({"benchmark": "digits-split", "settings": {name: values}}), encoding="utf-8")
    loaded = load_run_config(path)
    overrides = {key.partition(".")[2]: raw for key, raw in loaded.settings.items()}
    assert build_config(cls.Config, overrides, name).to_dict() == config.to_dict()


def test_literals_quote_what_toml_needs() -> None:
    assert literal("a\"b\\c") == '"a\\"b\\\\c"' and literal([0.9, 0.999]) == "[0.9, 0.999]" and literal(True) == "true"
    text = dump_toml({"benchmark": "x", "strategies": ["avalanche:EWC"], "settings": {"avalanche:EWC": {"ewc_lambda": 0.4}}})
    assert tomllib.loads(text)["settings"]["avalanche:EWC"] == {"ewc_lambda": 0.4}
