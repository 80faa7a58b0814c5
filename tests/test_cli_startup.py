"""The quick commands start without torch (perf/cli_startup.py prints their CPU time), and the
listing text is plain and wrapped at word boundaries."""

from __future__ import annotations

import subprocess
import sys

import pytest

from clbench.cli.static import static_docstring
from clbench.cli.text import plain, summary, wrap

PROBE = """import sys
from clbench.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
heavy = sorted(m for m in ("torch", "transformers", "open_clip", "timm", "matplotlib", "avalanche", "wandb", "mlflow") if m in sys.modules)
print("HEAVY:" + ",".join(heavy), file=sys.stderr)
"""


@pytest.mark.parametrize("args", [["--help"], ["list"], ["show", "digits-split"], ["show", "mtil"], ["show", "lora"], ["show", "mora"], ["show", "codyra"],
                                  ["run", "--help"], ["report", "--help"]])
def test_quick_commands_import_no_heavy_library(args: list[str]) -> None:
    result = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env={"HF_HUB_OFFLINE": "1", "PATH": ""})
    assert result.stderr.strip().splitlines()[-1] == "HEAVY:", result.stderr[-500:]


def test_every_builtin_strategy_config_imports_without_torch() -> None:
    """``clbench show STRATEGY`` imports the strategy's ``config.py``: it must not pull torch in."""
    code = ("import sys; from clbench import registry; from importlib import import_module\n"
            "own = [p for p in registry.plugins('strategies') if registry.normalize(p.dist) == registry.OWN_DISTRIBUTION]\n"
            "[import_module(p.value.partition(':')[0] + '.config') for p in own]\n"
            "print(len(own), [m for m in ('torch', 'transformers', 'open_clip', 'timm', 'avalanche') if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"HF_HUB_OFFLINE": "1", "PATH": ""})
    count, heavy = result.stdout.split(" ", 1)
    assert int(count) >= 17 and heavy.strip() == "[]", result.stdout + result.stderr[-500:]


def test_show_reads_every_builtin_strategy_from_source_as_the_class_says() -> None:
    """``clbench show`` reads a built-in strategy's class attributes from source (no torch); they
    must be what the imported class holds, for every built-in strategy."""
    from clbench import registry
    from clbench.cli.listing import StrategyFacts

    own = [p for p in registry.plugins("strategies") if registry.normalize(p.dist) == registry.OWN_DISTRIBUTION]
    assert len(own) >= 17
    for plugin in own:
        read = StrategyFacts.from_source(plugin.value)
        assert read is not None, plugin.name
        assert read == StrategyFacts.of_class(plugin.load()), plugin.name


def test_summaries_are_whole_sentences_without_markup() -> None:
    doc = static_docstring("clbench.strategies.lora:SequentialLoRA")
    assert doc is not None and summary(doc) == "Freeze the backbone, wrap the target layers with LoRA and train only the adapters."
    assert plain("uses :class:`~clbench.api.Strategy` and ``rank``; see :mod:`clbench.nn`") == "uses Strategy and rank; see clbench.nn"
    assert summary("First sentence ends here.\nSecond (e.g. this) one.") == "First sentence ends here."
    lines = wrap("word " * 40 + "a-very-long-hyphenated-identifier-that-must-not-break", indent=4).splitlines()
    assert all(line.startswith("    ") for line in lines) and lines[-1].strip().endswith("a-very-long-hyphenated-identifier-that-must-not-break")


def test_show_strategy_prints_the_value_for_each_backbone_kind(cli) -> None:
    status, out, _ = cli("show", "mora")
    assert status == 0
    assert "  rank = 8 (classic, llm) / 16 (clip, vit) [ours]: " in out and "None (vit)" in out
    assert "``" not in out and ":class:`" not in out


def test_progress_is_plain_lines_when_stderr_is_not_a_terminal(cli, small_digits, tmp_path, monkeypatch: pytest.MonkeyPatch,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("CLBENCH_PROGRESS_INTERVAL", "0")  # a line at every update instead of every 30 s
    caplog.set_level("INFO", logger="clbench")
    status, _, err = cli("run", small_digits, "--out", tmp_path / "runs", "-S", "epochs=1")  # stderr is captured: not a terminal
    assert status == 0, err
    lines = caplog.messages
    assert any(line.startswith("finetune s0 train 1/3 a: 1/") and " steps (" in line and "s left" in line for line in lines), lines[:20]
    assert any(line.startswith("finetune s0 eval init: ") and "examples" in line for line in lines)
    assert "\r" not in err  # no bar redrawn in a log
    caplog.clear()
    status, _, err = cli("run", small_digits, "--out", tmp_path / "quiet", "-S", "epochs=1", "--no-progress")
    assert status == 0 and not any(" steps (" in line for line in caplog.messages)


def test_help_wraps_at_spaces_only() -> None:
    from clbench.cli import build_parser

    run = next(a for a in build_parser()._subparsers._group_actions[0].choices.items() if a[0] == "run")[1]  # type: ignore[union-attr]
    text = run.format_help()
    assert "seed-N-kv-POLICY" in text and "seed-\n" not in text
    assert "  clbench run --config run.toml --seed 3" in text  # the hand-laid examples are kept as written
