"""``-S key=value`` parsing against config dataclasses, and benchmark-file validation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from clbench.api import StrategyConfig
from clbench.api.benchmark import load_benchmark_file, parse_benchmark
from clbench.config import build_config, parse_assignments, split_overrides
from clbench.errors import UsageError


@dataclass(frozen=True, kw_only=True)
class DemoConfig(StrategyConfig):
    """Demo.

    Attributes:
        rank: rank.
        targets: layers.
        merge: merge.
        scale: scale.
        name: a name.
    """

    rank: int = 8
    targets: tuple[str, ...] = ()
    merge: bool = False
    scale: float = 1.0
    name: str = "x"


def test_values_are_parsed_by_field_type() -> None:
    cfg = build_config(DemoConfig, {"rank": "4", "targets": "q,v", "merge": "true", "scale": "5e-4", "name": "hello", "betas": "[0.9, 0.9999]",
                                    "iterations": "500"}, "demo")
    assert (cfg.rank, cfg.targets, cfg.merge, cfg.scale, cfg.name) == (4, ("q", "v"), True, 5e-4, "hello")
    assert cfg.betas == (0.9, 0.9999) and cfg.iterations == 500
    assert build_config(DemoConfig, {"targets": '["fc"]', "scale": "2", "lr": "none"}, "demo").targets == ("fc",)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("rnak", "4", "has no setting 'rnak'; valid: amp, batch_size, betas"),
    ("rank", "four", "rank takes an integer, got 'four'"),
    ("rank", "2.5", "rank takes an integer"),
    ("merge", "yes", "merge takes true or false"),
    ("scale", "big", "scale takes a number"),
    ("betas", "[0.9]", "betas takes 2 values"),
])
def test_bad_overrides_name_the_key(key: str, value: str, message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace("[", r"\[")):
        build_config(DemoConfig, {key: value}, "demo")


def test_assignments_and_routing() -> None:
    assert parse_assignments(["a=1", "lora.rank= 4 "]) == {"a": "1", "lora.rank": "4"}
    with pytest.raises(UsageError, match="expected key=value"):
        parse_assignments(["rank"])
    routed = split_overrides({"rank": "4", "demo2.scale": "3", "lr": "0.1"}, {"demo": DemoConfig, "demo2": DemoConfig, "base": StrategyConfig})
    assert routed == {"demo": {"rank": "4", "lr": "0.1"}, "demo2": {"rank": "4", "scale": "3", "lr": "0.1"}, "base": {"lr": "0.1"}}
    with pytest.raises(UsageError, match="no selected strategy has a setting 'nope'"):
        split_overrides({"nope": "1"}, {"demo": DemoConfig})


MINIMAL = {"version": 1, "description": "d", "protocol": "class-incremental", "backbone": "mlp",
           "tasks": [{"name": "a", "loader": "sklearn-digits", "options": {"classes": [0]}}]}


def test_benchmark_file_validation(tmp_path: Path) -> None:
    spec = parse_benchmark({**MINIMAL, "train": {"epochs": 3}, "defaults": {"test_fraction": 0.5}}, "x")
    assert spec.train.epochs == 3 and spec.tasks[0].options == {"test_fraction": 0.5, "classes": [0]}
    for bad, message in [({**MINIMAL, "protocol": "online"}, "protocol of benchmark 'x' must be one of"),
                         ({k: v for k, v in MINIMAL.items() if k != "backbone"}, "missing required key 'backbone'"),
                         ({**MINIMAL, "extra": 1}, "unknown key\\(s\\) extra"),
                         ({**MINIMAL, "train": {"epochz": 1}}, "unknown train setting 'epochz'"),
                         ({**MINIMAL, "train": {"optimizer": "lion"}}, "optimizer must be one of"),
                         ({**MINIMAL, "tasks": [{"name": "a"}]}, "needs name and loader"),
                         ({**MINIMAL, "tasks": [{"name": "a", "loader": "l", "eval_only": True}]}, "has no trained task")]:
        with pytest.raises(UsageError, match=message):
            parse_benchmark(bad, "x")
    broken = tmp_path / "broken.toml"
    broken.write_text("version = [", encoding="utf-8")
    with pytest.raises(UsageError, match="cannot read benchmark file"):
        load_benchmark_file(broken)


def test_label_space_offsets_tasks_except_in_domain_incremental() -> None:
    from clbench.data import build_stream

    tasks = [{"name": "a", "loader": "sklearn-digits", "options": {"classes": [0, 1]}},
             {"name": "b", "loader": "sklearn-digits", "options": {"classes": [1, 2]}}]
    offset = build_stream(parse_benchmark({**MINIMAL, "tasks": tasks}, "x"))
    assert offset.class_names == ("0", "1", "1", "2") and [e.class_ids for e in offset.tasks] == [(0, 1), (2, 3)]
    assert set(offset.tasks[1].train.y.tolist()) == {2, 3}
    merged = build_stream(parse_benchmark({**MINIMAL, "protocol": "domain-incremental", "tasks": tasks}, "x"))
    assert merged.class_names == ("0", "1", "2") and [e.class_ids for e in merged.tasks] == [(0, 1), (1, 2)]
    assert set(merged.tasks[1].train.y.tolist()) == {1, 2}
