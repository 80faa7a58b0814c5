"""``clbench perf``: every implementation of the rank-gated LoRA layer, side by side in one run (``docs/kernels.md``).

Implementations, per shape, forward (inference, no autograd graph) and forward+backward (gradients
of ``x`` and the trainable slice, W0 frozen):

* ``base``: the frozen layer alone, ``x W0ᵀ + b`` (the denominator of every overhead);
* ``eager``: the readable reference, a dense mask multiply as in the official MoRAM/FlyLoRA code;
* ``peft``: peft's LoRA ``Linear`` of the same total rank, ungated (what plain LoRA costs users);
* ``compiled``: ``torch.compile`` of the eager reference;
* ``cpu``: clbench's torch fast path (scatter + in-place ``addmm_``, hand-written backward);
* ``triton``: clbench's Triton kernels (CUDA only);
* ``triton-noskip``: the Triton forward with rank-block skipping off (forward only, CUDA only).

Timing: on CUDA ``triton.testing.do_bench`` medians (L2 flushed between calls); on CPU the median
of ``time.process_time`` over repeats with a fixed thread count (wall-clock on shared small
machines is too noisy; see ``docs/kernels.md``). Each row reports time per call, the ratio to ``base``,
achieved GB/s (unique bytes of :mod:`clbench.kernels.floors` over the time), the fraction of the physical floor, the
spread between timing rounds, the forward's error against an fp64 reference and (CUDA) peak memory.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from clbench.errors import UsageError
from clbench.kernels import TopKSoftmaxGate, rank_gated_lora, rank_gated_lora_reference
from clbench.kernels.floors import KNOWN_DEVICES, DeviceFigures, LayerShape, layer_floors

SHAPE_SETS: dict[str, list[LayerShape]] = {
    "tiny": [LayerShape("tiny", 37, 45, 61, 13, 5, 5)],  # smoke test of the harness, not a measurement
    "small": [
        LayerShape("cpu-target", 2048, 768, 768, 64, 8, 8),
        LayerShape("cpu-r16", 2048, 768, 768, 16, 4, 4),
        LayerShape("cpu-wide", 512, 4096, 4096, 64, 8, 8),
    ],
    "clip": [
        LayerShape("clip-qkvo-r16", 12608, 768, 768, 16, 16, 16),
        LayerShape("clip-qkvo-r160", 12608, 768, 768, 160, 16, 16),
    ],
    "llama": [LayerShape("llama-qkvo-r64", 1536, 4096, 4096, 64, 8, 8)],
}
IMPLEMENTATIONS = ("base", "eager", "peft", "compiled", "cpu", "triton", "triton-noskip")
CUDA_ONLY = ("triton", "triton-noskip")
MODES = ("fwd", "fwdbwd")


@dataclass
class Row:
    """One timed (shape, implementation, mode)."""

    shape: str
    impl: str
    mode: str
    seconds: float | None
    ratio_to_base: float | None
    gbps: float | None
    floor_fraction: float | None
    spread: float | None = None
    error: float | None = None
    peak_mib: float | None = None
    note: str = ""


def shapes_for(selection: str, device: torch.device) -> list[LayerShape]:
    """The shapes of a named set (``small``, ``clip``, ``llama``, ``all``; default per device)."""
    if selection == "default":
        selection = "all" if device.type == "cuda" else "small"
    if selection == "all":
        return [s for group in SHAPE_SETS.values() for s in group]
    if selection not in SHAPE_SETS:
        raise UsageError(f"unknown shape set {selection!r}; choose tiny, small, clip, llama or all")
    return SHAPE_SETS[selection]


def calibrate(device: torch.device, dtype: torch.dtype) -> DeviceFigures:
    """Known figures for the detected GPU, else a quick measurement (copy bandwidth, GEMM rate)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, figures in KNOWN_DEVICES.items():
            if key in name:
                return DeviceFigures(name, figures.bandwidth, figures.peak_flops, figures.source)
    else:
        name = "CPU"
    n_copy = (256 if device.type == "cuda" else 32) * 2**20 // 4
    src = torch.randn(n_copy, device=device)
    dst = torch.empty_like(src)
    # The best of several calls estimates what the hardware can do; the benchmark reports medians.
    copy_s = _time(lambda: dst.copy_(src), device, repeats=10, warmup=2, best=True)
    n = 4096 if device.type == "cuda" else 1024
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    gemm_s = _time(lambda: a @ b, device, repeats=7, warmup=1, best=True)
    return DeviceFigures(name, 2 * src.numel() * 4 / copy_s, 2 * n**3 / gemm_s,
                         f"measured here: {src.numel() * 4 >> 20} MiB copy, {n}³ {str(dtype).split('.')[-1]} GEMM")


def _time(fn: Callable[[], Any], device: torch.device, *, repeats: int, warmup: int, best: bool = False) -> float:
    """Median (or, with ``best``, minimum) seconds per call: ``do_bench`` on CUDA, process time on CPU."""
    if device.type == "cuda":
        import triton.testing

        mode = "min" if best else "median"
        return float(triton.testing.do_bench(fn, warmup=25, rep=max(50, 10 * repeats), return_mode=mode)) / 1e3
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        samples.append(time.process_time() - start)
    return min(samples) if best else statistics.median(samples)


@dataclass
class Problem:
    """Random inputs of one shape (never zeros): layer, bank split into frozen and trainable ranks, MoRA gate."""

    x: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor
    a_frozen: torch.Tensor | None
    b_frozen: torch.Tensor | None
    a_train: torch.Tensor
    b_train: torch.Tensor
    gate: TopKSoftmaxGate
    dy: torch.Tensor


def make_problem(shape: LayerShape, device: torch.device, dtype: torch.dtype, seed: int = 0) -> Problem:
    """Inputs for ``shape``; the trainable bank slice requires grad."""
    gen = torch.Generator(device="cpu").manual_seed(seed)

    def rand(*size: int, scale: float = 1.0) -> torch.Tensor:
        return (torch.randn(*size, generator=gen) * scale).to(device=device, dtype=dtype)

    frozen = shape.ranks - shape.trainable
    return Problem(
        x=rand(shape.tokens, shape.d_in), weight=rand(shape.d_out, shape.d_in, scale=shape.d_in**-0.5),
        bias=rand(shape.d_out), a_frozen=rand(frozen, shape.d_in, scale=shape.d_in**-0.5) if frozen else None,
        b_frozen=rand(shape.d_out, frozen, scale=0.1) if frozen else None,
        a_train=rand(shape.trainable, shape.d_in, scale=shape.d_in**-0.5).requires_grad_(True),
        b_train=rand(shape.d_out, shape.trainable, scale=0.1).requires_grad_(True),
        gate=TopKSoftmaxGate(k=shape.k, temperature=0.05), dy=rand(shape.tokens, shape.d_out))


def _layer_fn(impl: str, p: Problem) -> tuple[Callable[[torch.Tensor], torch.Tensor], list[torch.Tensor]]:
    """``x -> y`` for one implementation and the parameters its backward must produce gradients for."""
    if impl == "base":
        return (lambda x: F.linear(x, p.weight, p.bias)), []
    if impl == "eager":
        return (lambda x: rank_gated_lora_reference(x, p.weight, p.bias, p.a_frozen, p.b_frozen, p.a_train,
                                                    p.b_train, p.gate)), [p.a_train, p.b_train]
    if impl in ("cpu", "triton"):
        return (lambda x: rank_gated_lora(x, p.weight, p.bias, p.a_frozen, p.b_frozen, p.a_train, p.b_train, p.gate,
                                          backend=impl)), [p.a_train, p.b_train]
    if impl == "triton-noskip":
        return _triton_without_skipping(p), []
    if impl == "compiled":
        compiled = torch.compile(rank_gated_lora_reference)
        return (lambda x: compiled(x, p.weight, p.bias, p.a_frozen, p.b_frozen, p.a_train, p.b_train,
                                   p.gate)), [p.a_train, p.b_train]
    if impl == "peft":
        layer = _peft_layer(p)
        params = [param for name, param in layer.named_parameters() if "lora_" in name]
        return layer, params
    raise UsageError(f"unknown implementation {impl!r}; choose from {', '.join(IMPLEMENTATIONS)}")


def _triton_without_skipping(p: Problem) -> Callable[[torch.Tensor], torch.Tensor]:
    """The Triton forward (K1 + K2) with every rank block computed: what rank-block skipping saves."""
    from clbench.kernels.plan import join_banks, plan_gate
    from clbench.kernels.triton_path import forward

    a_all, b_all, _ = join_banks(p.a_frozen, p.b_frozen, p.a_train, p.b_train, 1.0)

    def layer(x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            raise RuntimeError("triton-noskip is timed for the forward only")
        plan = plan_gate(p.gate, a_all.shape[0], x.shape[0])
        return forward(plan, x, p.weight, p.bias, a_all, b_all, None, skip_blocks=False)[0]

    return layer


def _peft_layer(p: Problem) -> torch.nn.Module:
    """peft's LoRA ``Linear`` of the same total rank on the same base weights, B made non-zero."""
    try:
        import peft
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ModuleNotFoundError("peft is not installed (pip install 'clbench[dev]')") from exc
    rank = p.a_train.shape[0] + (0 if p.a_frozen is None else p.a_frozen.shape[0])
    base = torch.nn.Linear(p.weight.shape[1], p.weight.shape[0], device=p.x.device, dtype=p.x.dtype)
    with torch.no_grad():
        base.weight.copy_(p.weight)
        base.bias.copy_(p.bias)
    model = peft.get_peft_model(torch.nn.Sequential(base),
                                peft.LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0, target_modules=["0"]))
    layer = model.base_model.model[0]
    with torch.no_grad():
        for name, param in layer.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.1)  # peft starts B at zero; never time on zeros
    return layer


def _make_step(impl: str, mode: str, p: Problem) -> tuple[Callable[[], None], Callable[[torch.Tensor], torch.Tensor]]:
    """The timed call of one (impl, mode), run once so compilation and JIT are excluded, and the layer."""
    layer, params = _layer_fn(impl, p)
    return timed_step(layer, params, mode, p), layer


def timed_step(layer: Callable[[torch.Tensor], torch.Tensor], params: list[torch.Tensor], mode: str,
               p: Problem) -> Callable[[], None]:
    """The call timed for ``mode``: the forward without a graph, or the forward and the gradients of ``x``
    and ``params`` for the cotangent ``p.dy``; run once here so compilation and JIT are excluded."""
    if mode == "fwd":
        x = p.x

        def step() -> None:
            with torch.no_grad():
                layer(x)
    else:
        x = p.x.detach().requires_grad_(True)
        inputs = [x, *params]

        def step() -> None:
            torch.autograd.grad(layer(x), inputs, p.dy)
    step()
    return step


def _fp64_outputs(p: Problem) -> dict[str, torch.Tensor]:
    """fp64 references of the base layer and of the gated layer on the benchmark's inputs."""
    def d(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.detach().double()

    with torch.no_grad():
        base = F.linear(d(p.x), d(p.weight), d(p.bias))
        gated = rank_gated_lora_reference(d(p.x), d(p.weight), d(p.bias), d(p.a_frozen), d(p.b_frozen), d(p.a_train),
                                          d(p.b_train), p.gate)
    return {"base": base, "gated": gated}


def _output_error(impl: str, layer: Callable[[torch.Tensor], torch.Tensor], p: Problem,
                  refs: dict[str, torch.Tensor]) -> float | None:
    """``‖y − y_fp64‖ / ‖y_fp64‖`` of the forward (``None`` for peft, which is ungated LoRA, another operation)."""
    if impl == "peft":
        return None
    with torch.no_grad():
        y = layer(p.x).double()
    ref = refs["base" if impl == "base" else "gated"]
    return float((y - ref).norm() / ref.norm())


def run_benchmark(device: torch.device, shapes: list[LayerShape], impls: list[str], modes: list[str], *,
                  repeats: int, warmup: int, threads: int | None, rounds: int = 2,
                  log: Callable[[str], None] = print) -> dict[str, Any]:
    """Time every (shape, impl, mode) in ``rounds`` interleaved rounds; returns JSON-ready results.

    Each row's time is the median over rounds of the per-round medians and ``spread`` is the
    rounds' range relative to it: a difference between implementations smaller than the spread is
    noise. ``error`` is the forward's relative error against the fp64 reference.
    """
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if device.type == "cpu" and threads:
        torch.set_num_threads(threads)
    figures = calibrate(device, dtype)
    elem = torch.finfo(dtype).bits // 8
    rows: list[Row] = []
    for shape in shapes:
        problem = make_problem(shape, device, dtype)
        floors = layer_floors(shape, elem, figures)
        refs = _fp64_outputs(problem)
        for mode in modes:
            steps: dict[str, Callable[[], None]] = {}
            errors: dict[str, float | None] = {}
            peaks: dict[str, float | None] = {}
            failed: dict[str, str] = {}
            for impl in impls:
                if impl == "triton-noskip" and mode != "fwd":
                    continue
                try:
                    if device.type == "cuda":
                        torch.cuda.reset_peak_memory_stats(device)
                    steps[impl], layer = _make_step(impl, mode, problem)
                    peaks[impl] = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
                    errors[impl] = _output_error(impl, layer, problem, refs) if mode == "fwd" else None
                except Exception as exc:  # one failing implementation must not hide the others' numbers
                    failed[impl] = f"{type(exc).__name__}: {exc}"[:160]
                    log(f"  {shape.name} {mode} {impl}: skipped ({failed[impl]})")
            samples: dict[str, list[float]] = {impl: [] for impl in steps}
            for _ in range(rounds):
                for impl, step in steps.items():
                    samples[impl].append(_time(step, device, repeats=repeats, warmup=warmup))
            base_s = statistics.median(samples["base"]) if "base" in samples else None
            for impl in impls:
                if impl in failed:
                    rows.append(Row(shape.name, impl, mode, None, None, None, None, note=failed[impl]))
                if impl not in samples:
                    continue
                seconds = statistics.median(samples[impl])
                kind = "base" if impl == "base" else "gated"
                rows.append(Row(shape.name, impl, mode, seconds, None if base_s is None else seconds / base_s,
                                floors[f"{kind}_{mode}_bytes"] / seconds / 1e9, floors[f"{kind}_{mode}"] / seconds,
                                spread=(max(samples[impl]) - min(samples[impl])) / seconds, error=errors[impl],
                                peak_mib=peaks[impl]))
                log(f"  {shape.name} {mode} {impl}: {seconds * 1e3:.3f} ms")
        del problem, refs
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return {
        "device": figures.name, "device_figures": {"bandwidth_Bps": figures.bandwidth, "peak_flops": figures.peak_flops,
                                                   "source": figures.source},
        "dtype": str(dtype).split(".")[-1], "timer": "triton do_bench median" if device.type == "cuda"
        else f"process_time median of {repeats}, {torch.get_num_threads()} thread(s)", "rounds": rounds,
        "torch": torch.__version__, "shapes": [s.as_dict() for s in shapes],
        "floors_s": {s.name: layer_floors(s, elem, figures) for s in shapes},
        "rows": [row.__dict__ for row in rows],
    }


def format_table(results: dict[str, Any]) -> str:
    """The side-by-side table (printed last so it survives when only the tail of the output is kept)."""
    head = (f"{'shape':<16} {'mode':<7} {'impl':<13} {'ms/call':>10} {'spread':>7} {'x base':>7} {'GB/s':>8} "
            f"{'% floor':>8} {'err fp64':>9} {'peak MiB':>9}  note")
    lines = [f"device: {results['device']} ({results['dtype']}; {results['timer']}; {results['rounds']} rounds)",
             f"floors from: {results['device_figures']['source']}", head, "-" * len(head)]

    def fmt(value: float | None, spec: str, width: int) -> str:
        return f"{'-':>{width}}" if value is None else f"{value:>{width}{spec}}"

    for row in results["rows"]:
        if row["seconds"] is None:
            lines.append(f"{row['shape']:<16} {row['mode']:<7} {row['impl']:<13} {'-':>10}  {row['note']}")
            continue
        lines.append(f"{row['shape']:<16} {row['mode']:<7} {row['impl']:<13} {row['seconds'] * 1e3:>10.3f} "
                     f"{fmt(None if row['spread'] is None else 100 * row['spread'], '.1f', 6)}% "
                     f"{fmt(row['ratio_to_base'], '.2f', 7)} {row['gbps']:>8.1f} {100 * row['floor_fraction']:>7.1f}% "
                     f"{fmt(row['error'], '.1e', 9)} {fmt(row['peak_mib'], '.0f', 9)}  {row['note']}")
    return "\n".join(lines)


def write_json(results: dict[str, Any], path: Path) -> None:
    """Write the results as JSON (creating the folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
