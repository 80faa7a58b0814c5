"""Facts about the machine a run is on that change how fast a setting runs, not what it computes."""

from __future__ import annotations

import torch

__all__ = ["bf16_is_native"]


def bf16_is_native(device: torch.device) -> bool:
    """Whether bfloat16 matrix products run natively on ``device``.

    CUDA: when the GPU supports bf16. CPU: when oneDNN finds AVX512-BF16 or AMX; elsewhere (AVX2
    CPUs, many AMD ones among them) bf16 products are emulated and several times slower than
    fp32 (measured on a 2-core AVX2 AMD EPYC: a 768×768 × 768×131 product 80 ms in bf16 vs 2.7 ms
    in fp32; the quickstart's evaluation 2.3 vs 17.5 prompts/s, ``perf/eval_throughput.py``).
    """
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return False
    supported = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        return bool(supported()) if supported is not None else False
    except RuntimeError:  # pragma: no cover - depends on the build
        return False
