"""``clbench perf`` and the floor formulas: the design's H100 floor table, the harness on a tiny shape, CLI errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from clbench.kernels.floors import KNOWN_DEVICES, LayerShape, layer_floors

H100 = KNOWN_DEVICES["H100"]


@pytest.mark.parametrize(("shape", "base_us", "fused_us"), [
    (LayerShape("clip-r16", 12608, 768, 768, 16, 16, 16), 18.8, 19.6),
    (LayerShape("clip-r160", 12608, 768, 768, 160, 16, 16), 18.8, 26.7),
    (LayerShape("clip-fc", 12608, 768, 3072, 160, 16, 16), 75.3, 94.9),
    (LayerShape("llama-r64", 1536, 4096, 4096, 64, 8, 8), 65.2, 67.3),
])
def test_floors_reproduce_the_spec_table(shape: LayerShape, base_us: float, fused_us: float) -> None:
    """Base GEMM and fused 1-kernel dense-masked floors on an H100, bf16."""
    floors = layer_floors(shape, 2, H100)
    assert floors["base_fwd"] * 1e6 == pytest.approx(base_us, abs=0.1)
    assert floors["gated_fwd"] * 1e6 == pytest.approx(fused_us, abs=0.1)
    assert floors["gated_fwdbwd"] > floors["gated_fwd"] > floors["base_fwd"]


def test_decode_shape_is_memory_bound() -> None:
    floors = layer_floors(LayerShape("decode", 16, 4096, 4096, 64, 8, 8), 2, H100)
    w0_read = 2 * 4096 * 4096 / H100.bandwidth
    assert floors["base_fwd"] == pytest.approx(w0_read, rel=0.02)


def _run_tiny(impls: list[str]) -> dict:
    from clbench import perfbench

    results = perfbench.run_benchmark(torch.device("cpu"), perfbench.SHAPE_SETS["tiny"], impls, ["fwd", "fwdbwd"],
                                      repeats=1, warmup=0, threads=1, log=lambda _: None)
    rows = {(r["impl"], r["mode"]): r for r in results["rows"]}
    assert set(rows) == {(i, m) for i in impls for m in ("fwd", "fwdbwd")}
    for (impl, _), row in rows.items():
        assert row["seconds"] is not None and row["seconds"] >= 0, (impl, row["note"])
    return results


@pytest.mark.slow
def test_perf_harness_runs_peft_and_torch_compile() -> None:
    _run_tiny(["base", "peft", "compiled"])


def test_perf_harness_times_the_cpu_implementations(tmp_path: Path) -> None:
    from clbench import perfbench

    results = _run_tiny(["base", "eager", "cpu"])
    rows = {(r["impl"], r["mode"]): r for r in results["rows"]}
    assert rows[("base", "fwd")]["ratio_to_base"] == 1.0
    # The timed implementations compute the layer: forward error against fp64 at fp32 level.
    for impl in ("base", "eager", "cpu"):
        assert rows[(impl, "fwd")]["error"] < 1e-5, impl
    assert rows[("cpu", "fwd")]["spread"] >= 0
    table = perfbench.format_table(results)
    assert table.splitlines()[-1].startswith("tiny") and "% floor" in table
    perfbench.write_json(results, tmp_path / "out" / "perf.json")
    assert json.loads((tmp_path / "out" / "perf.json").read_text())["rows"][0]["impl"] == "base"


def test_perf_cli_writes_json(cli, tmp_path: Path) -> None:
    status, out, err = cli("perf", "--shapes", "tiny", "--impl", "cpu", "--mode", "fwd", "--repeats", "1",
                           "--json", tmp_path / "p.json")
    assert status == 0, err
    data = json.loads((tmp_path / "p.json").read_text())
    assert [r["impl"] for r in data["rows"]] == ["base", "cpu"]
    assert "ms/call" in out


@pytest.mark.parametrize("args", [["--impl", "fastest"], ["--shapes", "huge"], ["--mode", "sideways"],
                                  ["--device", "tpu"], ["--repeats", "0"], ["--rounds", "0"]])
def test_perf_cli_rejects_bad_options_in_one_line(cli, args: list[str]) -> None:
    status, out, err = cli("perf", "--shapes", "tiny", *args) if "--shapes" not in args else cli("perf", *args)
    assert status == 2
    assert err.startswith("clbench: error:") and err.count("\n") == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_perf_cli_without_gpu(cli) -> None:
    status, _, err = cli("perf", "--device", "cuda")
    assert status == 2 and "no CUDA device" in err
    status, _, err = cli("perf", "--impl", "triton", "--shapes", "tiny")
    assert status == 2 and "needs --device cuda" in err
