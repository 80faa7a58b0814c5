"""bf16 autocast where bf16 is emulated: the run says so once, and CoSO's sketch stays fp32 there."""

from __future__ import annotations

import logging

import pytest
import torch

from clbench import hardware, preflight
from clbench.api.benchmark import TrainSettings
from clbench.strategies.coso.projector import fast_sketch_dtype

CPU = torch.device("cpu")


@pytest.mark.parametrize("native", [True, False])
def test_cpu_bf16_follows_onednn(monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: native, raising=False)
    assert hardware.bf16_is_native(CPU) is native
    assert fast_sketch_dtype(CPU) == (torch.bfloat16 if native else torch.float32)


def test_a_device_without_bf16_is_not_native() -> None:
    assert not hardware.bf16_is_native(torch.device("meta"))


@pytest.mark.parametrize(("amp", "native", "warned"), [("bf16", False, True), ("bf16", True, False), ("none", False, False)])
def test_emulated_bf16_is_announced_once(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, amp: str, native: bool,
                                         warned: bool) -> None:
    monkeypatch.setattr(preflight, "bf16_is_native", lambda device: native)
    with caplog.at_level(logging.WARNING, logger="clbench"):
        preflight.warn_emulated_bf16(TrainSettings(amp=amp), CPU)
    lines = [r.getMessage() for r in caplog.records if "amp=bf16" in r.getMessage()]
    assert len(lines) == int(warned)
    if warned:
        assert "no AVX512-BF16 or AMX" in lines[0] and "-S amp=none" in lines[0]
