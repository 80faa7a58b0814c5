"""Every built-in strategy's guide lists the defaults that are ours under "## Differs from the paper".

A setting a config labels as ours (``DEPARTURES``, which ``clbench show`` prints) must be named, in
backticks, in that section of ``docs/strategies/<name>.md``, so the guide and the CLI cannot drift.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from clbench import registry

DOCS = Path(__file__).resolve().parents[1] / "docs" / "strategies"
BUILT_IN = ("lora", "olora", "inflora", "smora", "flylora", "mora", "codyra", "coso", "ewc", "lwf", "replay", "finetune", "joint",
            "altlora", "sara")


def _section(text: str) -> str:
    start = text.index("## Differs from the paper")
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


@pytest.mark.parametrize("name", BUILT_IN)
def test_guide_lists_every_default_labelled_ours(name: str) -> None:
    cls, _ = registry.get_strategy(name)
    guide = DOCS / f"{name}.md"
    assert guide.is_file(), f"{name} has no guide"
    section = _section(guide.read_text(encoding="utf-8"))
    missing = [key for key in cls.Config.DEPARTURES if f"`{key}`" not in section]
    assert not missing, f"{name}: {missing} labelled ours in clbench show but not in the guide's 'Differs from the paper'"


def test_avalanche_and_d2o_guides_have_the_section() -> None:
    for name in ("avalanche", "d2o"):
        assert "## Differs from the paper" in (DOCS / f"{name}.md").read_text(encoding="utf-8")
