"""Entry-point plugins: lazy loading, duplicate names, broken plugins, the autoload switch.

Fake distributions are made as ``*.dist-info`` folders on ``sys.path``, which is exactly how
``importlib.metadata`` discovers installed packages.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from clbench import registry
from clbench.asset_policy import ALLOW_DOWNLOAD_ENV, resolve_downloads
from clbench.errors import UsageError
from clbench.evaluation import resolve_source

STRATEGY_MODULE = '''
from clbench.api import Strategy, StrategyConfig
class Dup(Strategy):
    """A duplicate-named strategy."""
'''


def _fake_dist(root: Path, dist: str, entry_points: str, modules: dict[str, str]) -> None:
    info = root / f"{dist}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n", encoding="utf-8")
    (info / "entry_points.txt").write_text(entry_points, encoding="utf-8")
    for name, code in modules.items():
        (root / f"{name}.py").write_text(code, encoding="utf-8")


@pytest.fixture
def plugins_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    _fake_dist(tmp_path, "fake_dup", "[clbench.strategies]\nfinetune = fake_dup_mod:Dup\nbroken = fake_broken_mod:Nope\n",
               {"fake_dup_mod": STRATEGY_MODULE, "fake_broken_mod": "raise ImportError('no such thing as fake_broken')\n"})
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.refresh()
    yield tmp_path
    sys.modules.pop("fake_dup_mod", None)
    registry.refresh()


def test_builtins_resolve_lazily() -> None:
    names = {p.name for p in registry.plugins("strategies")}
    assert {"zeroshot", "finetune", "lora", "joint"} <= names
    plugin = registry.resolve("strategies", "LoRA")  # case and _ are normalised
    assert plugin.dist == "clbench" and plugin.value == "clbench.strategies.lora:SequentialLoRA"


def test_unknown_name_suggests_close_matches() -> None:
    with pytest.raises(UsageError, match="unknown strategy 'fintune'; did you mean 'finetune'"):
        registry.resolve("strategies", "fintune")
    with pytest.raises(UsageError, match="unknown benchmark 'digit-split'; did you mean 'digits-split'"):
        registry.load_benchmark("digit-split")


def test_duplicate_names_are_an_error_and_dist_name_picks_one(plugins_on_path: Path) -> None:
    with pytest.raises(UsageError, match="registered by several packages: clbench .*, fake_dup 1.0"):
        registry.get_strategy("finetune")
    cls, plugin = registry.get_strategy("fake_dup/finetune")
    assert cls.__name__ == "Dup" and plugin.dist == "fake_dup"
    assert registry.get_strategy("clbench/finetune")[0].__name__ == "FineTune"


def test_broken_plugin_is_reported_and_others_still_load(plugins_on_path: Path, cli) -> None:
    with pytest.raises(UsageError, match="strategy 'broken' from fake_dup 1.0 failed to load .*ImportError: no such thing"):
        registry.get_strategy("broken")
    status, out, _ = cli("list", "strategies")
    assert status == 0
    assert "ERROR: strategy 'broken'" in out and "joint" in out and "Train on the concatenation" in out


def test_autoload_switch_keeps_only_builtins(plugins_on_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(registry.DISABLE_ENV, "1")
    assert all(p.dist == "clbench" for p in registry.plugins("strategies"))
    assert registry.get_strategy("finetune")[0].__name__ == "FineTune"
    with pytest.raises(UsageError, match="unknown strategy 'broken'"):
        registry.get_strategy("broken")


def test_listing_names_imports_no_plugin() -> None:
    import subprocess

    code = ("import sys; from clbench import registry; names = [p.name for p in registry.plugins('strategies')]; "
            "print('lora' in names, any(m.startswith('clbench.strategies.') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "False"]


def test_qualified_names_resolve_end_to_end_for_strategies_and_backbones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli,
                                                                          small_digits: Path) -> None:
    """A plugin claiming ``finetune`` and the backbone kind ``mlp`` blocks the bare names (an error
    naming both packages), and ``clbench/finetune`` / ``clbench/mlp:…`` run, resume and report as one run."""
    _fake_dist(tmp_path / "plugins", "fake_claims", "[clbench.strategies]\nfinetune = fake_claims_mod:Dup\n"
               "[clbench.backbones]\nmlp = fake_claims_mod:build\n", {"fake_claims_mod": STRATEGY_MODULE + "def build(spec):\n    raise RuntimeError\n"})
    monkeypatch.syspath_prepend(str(tmp_path / "plugins"))
    registry.refresh()
    try:
        out = tmp_path / "runs"
        status, _, err = cli("run", small_digits, "-s", "finetune", "--out", out, "--no-progress")
        assert status == 2 and "registered by several packages" in err and "pick one as DIST/finetune" in err
        status, _, err = cli("run", small_digits, "-s", "clbench/finetune", "--out", out, "--no-progress")
        assert status == 2 and "--backbone clbench/mlp:32" in err and not out.exists()
        args = ("run", small_digits, "-s", "clbench/finetune", "--backbone", "clbench/mlp:32", "--out", out, "--no-progress", "-S", "clbench/finetune.epochs=2")
        status, stdout, err = cli(*args)
        assert status == 0, err
        saved = json.loads((out / "digits-small" / "finetune" / "seed-0-S-epochs=2" / "results.json").read_text())
        assert saved["strategy"]["package"] == "clbench" and saved["backbone"]["spec"] == "mlp:32" and saved["strategy"]["config"]["epochs"] == 2
        status, again, err = cli(*args, "--resume")  # the finished run is recognised under the qualified names
        def row(text: str) -> list[str]:
            return [cell for cell in next(line for line in text.splitlines() if line.startswith("finetune")).split() if not cell.endswith("s")]

        assert status == 0 and row(again) == row(stdout), err
        status, _, err = cli("run", small_digits, "-s", "fake_claims/finetune", "--backbone", "clbench/mlp:32", "--out", out, "--resume", "--no-progress",
                          "-S", "epochs=2")
        assert status == 2 and "was run with strategy 'finetune' from clbench, not from fake_claims" in err
    finally:
        sys.modules.pop("fake_claims_mod", None)
        registry.refresh()


def test_a_plugin_exiting_at_import_is_listed_as_broken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli) -> None:
    _fake_dist(tmp_path, "fake_exit", "[clbench.strategies]\nquitter = fake_exit_mod:X\n[clbench.backbones]\nquits = fake_exit_mod:build\n",
               {"fake_exit_mod": "import sys\nsys.exit(3)\n"})
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.refresh()
    try:
        status, out, err = cli("list")
        assert status == 0 and err == ""
        assert "ERROR: strategy 'quitter' from fake_exit 1.0 failed to load (fake_exit_mod:X): it called sys.exit(3) while being imported" in out
        assert "ERROR: backbone 'quits'" in out and "lora" in out and "digits-split" in out
    finally:
        sys.modules.pop("fake_exit_mod", None)
        registry.refresh()


SPY_BACKBONES = '''
from clbench.backbones.classic import build_mlp
SEEN = []
def explicit(spec, *, allow_download=None):
    SEEN.append(("explicit", allow_download))
    return build_mlp("mlp:" + spec.partition(":")[2])
def spec_only(spec):
    SEEN.append(("spec_only", None))
    return build_mlp("mlp:" + spec.partition(":")[2])
'''


def test_the_run_passes_its_download_decision_to_backbone_factories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli,
                                                                    small_digits: Path) -> None:
    """``--allow-download`` reaches a factory that takes ``allow_download`` as an argument (no
    environment variable is set for it); a factory written for ``factory(spec)`` still builds;
    ``$HF_HUB_OFFLINE`` wins over the flag."""
    _fake_dist(tmp_path / "plugins", "fake_spy", "[clbench.backbones]\nspyexplicit = fake_spy_mod:explicit\nspyonly = fake_spy_mod:spec_only\n",
               {"fake_spy_mod": SPY_BACKBONES})
    monkeypatch.syspath_prepend(str(tmp_path / "plugins"))
    monkeypatch.delenv(ALLOW_DOWNLOAD_ENV, raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    registry.refresh()
    try:
        status, _, err = cli("run", small_digits, "-s", "finetune", "--backbone", "spyexplicit:32", "--out", tmp_path / "runs",
                             "--no-progress", "--allow-download", "-S", "epochs=1")
        assert status == 0, err
        seen = sys.modules["fake_spy_mod"].SEEN
        assert seen == [("explicit", True)] and ALLOW_DOWNLOAD_ENV not in os.environ
        registry.build_backbone("spyexplicit:32", allow_download=resolve_downloads(None))
        registry.build_backbone("spyonly:32", allow_download=True)
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        registry.build_backbone("spyexplicit:32", allow_download=resolve_downloads(True))
        assert seen[1:] == [("explicit", False), ("spec_only", None), ("explicit", False)]
        resolve_source("spyexplicit:32", allow_download=False)  # clbench evaluate on a backbone spec
        assert seen[-1] == ("explicit", False)
    finally:
        sys.modules.pop("fake_spy_mod", None)
        registry.refresh()
