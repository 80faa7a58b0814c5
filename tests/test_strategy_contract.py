"""The strategy contract matrix: every registered strategy × every tiny backbone kind it claims
(mlp, encoder, vit, clip, causal LM, seq2seq LM), checked by :func:`clbench.testing.check_strategy`:
set-up, one task of training changes only what the strategy trains, JSON telemetry, a state that
round-trips through a checkpoint, and a resume after the first task's checkpoint that ends exactly
where the uninterrupted run does."""

from __future__ import annotations

from pathlib import Path

import pytest

from clbench import registry
from clbench.errors import UsageError
from clbench.testing import CASE_KINDS, ContractCase, check_strategy, tiny_cases

EXPECTED_REFUSALS = {("avalanche", "encoder"): "need tensor inputs", ("avalanche", "mlp"): "rerun with --overwrite instead of --resume"}
"""Declared refusals, each one line: avalanche strategies train on tensors (the encoder classifies
text), and their plugins keep state clbench checkpoints cannot hold, so they refuse to resume (after
the training-step and telemetry checks have passed)."""


def _runnable(name: str) -> str:
    return "avalanche:Naive" if name == "avalanche" else name


def _cells() -> list[tuple[str, str]]:
    cells = []
    for plugin in registry.plugins("strategies"):
        cls, _ = registry.get_strategy(_runnable(plugin.name))
        cells += [(plugin.name, case) for case, kind in CASE_KINDS.items() if kind in cls.backbone_kinds]
    return sorted(cells)


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ContractCase]:
    return tiny_cases(tmp_path_factory.mktemp("contract"))


@pytest.mark.parametrize(("strategy", "case"), _cells())
def test_strategy_contract(strategy: str, case: str, cases: dict[str, ContractCase]) -> None:
    cls, _ = registry.get_strategy(_runnable(strategy))
    if (strategy, case) in EXPECTED_REFUSALS:
        with pytest.raises(UsageError, match=EXPECTED_REFUSALS[strategy, case]):
            check_strategy(cls, cases[case])
        return
    check_strategy(cls, cases[case])


def test_the_matrix_covers_every_strategy_and_kind() -> None:
    cells = _cells()
    assert {s for s, _ in cells} == {p.name for p in registry.plugins("strategies")}
    assert {c for _, c in cells} == set(CASE_KINDS)


def test_the_contract_catches_an_undeclared_update(cases: dict[str, ContractCase]) -> None:
    """A strategy that secretly changes a frozen weight fails the check (the contract can fail)."""
    import torch

    from clbench.strategies.lora import SequentialLoRA

    class Sneaky(SequentialLoRA):
        def after_step(self, step: int, experience: object) -> None:
            with torch.no_grad():
                next(p for p in self.model.parameters() if not p.requires_grad).add_(1.0)

    with pytest.raises(AssertionError, match="does not train"):
        check_strategy(Sneaky, cases["mlp"])
