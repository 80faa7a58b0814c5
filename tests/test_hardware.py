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


def test_amp_none_turns_a_benchmarks_bf16_off(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """``-S amp=none`` is the value none (the warning's advice), not "keep the benchmark's bf16"; other
    optional settings still read none as unset."""
    from clbench.config import build_config
    from clbench.registry import get_strategy, load_benchmark
    from clbench.runner import resolve_train

    lora = get_strategy("lora")[0]
    config = build_config(lora.Config, {"amp": "none", "lr": "none"}, owner="strategy 'lora'")
    assert config.amp == "none" and config.lr is None
    bench = tmp_path / "bf16.toml"
    bench.write_text('version = 1\ndescription = "bf16 digits"\nprotocol = "class-incremental"\nbackbone = "mlp:8"\n[train]\namp = "bf16"\n[[tasks]]\nname = "a"\nloader = "sklearn-digits"\n'
                     'options = { classes = [0, 1] }\n')
    spec, _ = load_benchmark(str(bench))
    assert resolve_train(spec, "lora", config, "classic").amp == "none"
    assert resolve_train(spec, "lora", lora.Config(), "classic").amp == "bf16"
