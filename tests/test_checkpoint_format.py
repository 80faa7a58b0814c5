"""Checkpoints in safetensors: the state codec round-trips exactly, loads without pickle, and a
checkpoint pickled by an older clbench (``task-NNN.pt``) still resumes to the same numbers."""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from clbench import runner, statefile
from clbench.runner import RunOptions, run


def test_nested_state_round_trips_with_types_and_dtypes(tmp_path: Path) -> None:
    shared = torch.arange(6.0)
    state = {
        "model": {"fc.weight": torch.randn(3, 4), "half": torch.ones(2, dtype=torch.bfloat16), "mask": torch.tensor([True, False]),
                  "scalar": torch.tensor(3), "empty": torch.zeros(0, 5)},
        "strategy": {
            "carried": {0: (shared, shared[:3]), 7: [1, 2.5, None, "x"]},  # int keys, a tuple, views of one storage
            "$odd": {"nan": math.nan, "inf": -math.inf, "flag": True},
            "buffer": np.arange(4, dtype=np.int64),
            "np_scalar": np.float32(1.5),
        },
    }
    path = tmp_path / "s.safetensors"
    path.write_bytes(statefile.to_bytes(state))
    back = statefile.load(path)
    for key, value in state["model"].items():
        assert back["model"][key].dtype == value.dtype and torch.equal(back["model"][key], value), key
    carried = back["strategy"]["carried"]
    assert set(carried) == {0, 7} and isinstance(carried[0], tuple)
    assert torch.equal(carried[0][0], shared) and torch.equal(carried[0][1], shared[:3])
    assert carried[7] == [1, 2.5, None, "x"]
    odd = back["strategy"]["$odd"]
    assert math.isnan(odd["nan"]) and odd["inf"] == -math.inf and odd["flag"] is True
    assert isinstance(back["strategy"]["buffer"], np.ndarray) and back["strategy"]["buffer"].tolist() == [0, 1, 2, 3]
    assert back["strategy"]["np_scalar"] == 1.5


def test_loading_never_unpickles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "s.safetensors"
    path.write_bytes(statefile.to_bytes({"model": {"w": torch.ones(2)}, "strategy": {"k": [1]}}))

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("pickle used")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    assert statefile.load(path)["strategy"] == {"k": [1]}


def test_unsupported_values_are_refused_naming_where() -> None:
    with pytest.raises(TypeError, match=r"state.strategy.where is a PosixPath"):
        statefile.to_bytes({"strategy": {"where": Path("/")}})


class Crash(Exception):
    """Stands in for the process being killed right after a checkpoint."""


def test_a_legacy_pt_checkpoint_resumes_to_identical_numbers(small_digits: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    options = {"benchmark": str(small_digits), "strategy": "replay", "seed": 2, "progress": False,
               "overrides": {"buffer_size": "40", "epochs": "1"}}
    reference = run(RunOptions(out=tmp_path / "reference", **options))
    original = runner._Run.save_checkpoint

    def save_then_die(self: runner._Run, tasks_done: int) -> None:
        original(self, tasks_done)
        if tasks_done == 1:
            raise Crash

    monkeypatch.setattr(runner._Run, "save_checkpoint", save_then_die)
    with pytest.raises(Crash):
        run(RunOptions(out=tmp_path / "killed", **options))
    monkeypatch.undo()
    folder = next((tmp_path / "killed").rglob("checkpoint"))
    # Rewrite the checkpoint as clbench wrote it before safetensors: one torch.save pickle named task-001.pt.
    new = folder / "task-001.safetensors"
    torch.save(statefile.load(new), folder / "task-001.pt")
    new.unlink()
    pointer = json.loads((folder / "checkpoint.json").read_text())
    (folder / "checkpoint.json").write_text(json.dumps({**pointer, "file": "task-001.pt"}))

    resumed = run(RunOptions(out=tmp_path / "killed", resume=True, **options))
    assert resumed["matrix"]["values"] == reference["matrix"]["values"]
    assert resumed["metrics"] == reference["metrics"]
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint.json", "task-003.safetensors"]
