"""Physical floors of the rank-gated LoRA layer, for the benchmark's "fraction of floor".

A floor is ``max(bytes / bandwidth, FLOPs / peak)`` with unique bytes only. Device figures come
from :data:`KNOWN_DEVICES` (published H100 figures) or from a quick calibration on the
machine (a large copy and a large GEMM), and the benchmark prints which.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class LayerShape:
    """One adapted linear: ``tokens`` rows, ``d_in → d_out``, ``ranks`` in the bank of which ``trainable``
    get gradients, ``k`` kept per token."""

    name: str
    tokens: int
    d_in: int
    d_out: int
    ranks: int
    k: int
    trainable: int

    def as_dict(self) -> dict[str, int | str]:
        return asdict(self)


@dataclass(frozen=True)
class DeviceFigures:
    """Bandwidth (bytes/s) and dense matmul peak (FLOP/s) used for the floors, and where they come from."""

    name: str
    bandwidth: float
    peak_flops: float
    source: str


# Published/measured H100 SXM device-to-device copy and bf16 GEMM rates.
KNOWN_DEVICES = {
    "H100": DeviceFigures("H100", 3.0e12, 7.9e14, "H100 SXM: device-to-device copy ~3.0 TB/s, dense bf16 GEMM ~790 TFLOP/s"),
}


def forward_flops(s: LayerShape, *, gated: bool = True) -> float:
    """Base GEMM plus, when gated, the dense shrink and the dense-masked expand: ``2M(d_in d_out + R d_in + R d_out)``."""
    base = 2.0 * s.tokens * s.d_in * s.d_out
    return base + (2.0 * s.tokens * s.ranks * (s.d_in + s.d_out) if gated else 0.0)


def forward_bytes(s: LayerShape, elem: int, *, gated: bool = True) -> float:
    """``Q_min``: x, y and W0 once, plus the bank and ``M·k`` 2-byte indices when gated."""
    base = elem * (s.tokens * s.d_in + s.tokens * s.d_out + s.d_in * s.d_out)
    return base + (elem * s.ranks * (s.d_in + s.d_out) + 2.0 * s.tokens * s.k if gated else 0.0)


def backward_flops(s: LayerShape, *, gated: bool = True) -> float:
    """W0 frozen: ``dX = dY W0`` and, when gated, ``U = dY B``, ``dB``, ``dA`` and ``dZ A``."""
    dx_base = 2.0 * s.tokens * s.d_in * s.d_out
    if not gated:
        return dx_base
    m, r, t = s.tokens, s.ranks, s.trainable
    return dx_base + 2.0 * m * r * s.d_out + 2.0 * m * t * s.d_out + 2.0 * m * t * s.d_in + 2.0 * m * r * s.d_in


def backward_bytes(s: LayerShape, elem: int, *, gated: bool = True) -> float:
    """dY read, dX written, x re-read (gated: for dA), W0 read; gated adds the bank and fp32 ``z``, ``p``, ``dZ``."""
    if not gated:
        return elem * (s.tokens * s.d_out + s.tokens * s.d_in + s.d_in * s.d_out)
    small = elem * s.ranks * (s.d_in + s.d_out) + 4.0 * 3 * s.tokens * s.ranks
    return elem * (s.tokens * s.d_out + 2 * s.tokens * s.d_in + s.d_in * s.d_out) + small


def floor_seconds(flops: float, nbytes: float, device: DeviceFigures) -> float:
    """``max(bytes / BW, FLOPs / P)``."""
    return max(nbytes / device.bandwidth, flops / device.peak_flops)


def layer_floors(s: LayerShape, elem: int, device: DeviceFigures) -> dict[str, float]:
    """Floors in seconds: ``base``/``gated`` for ``fwd`` and ``fwdbwd`` (fused gated: one forward pass at
    its floor plus one backward pass at its floor), and the unique bytes each moves."""
    out: dict[str, float] = {}
    for gated, label in ((False, "base"), (True, "gated")):
        f_fwd, q_fwd = forward_flops(s, gated=gated), forward_bytes(s, elem, gated=gated)
        f_bwd, q_bwd = backward_flops(s, gated=gated), backward_bytes(s, elem, gated=gated)
        out[f"{label}_fwd"] = floor_seconds(f_fwd, q_fwd, device)
        out[f"{label}_fwdbwd"] = out[f"{label}_fwd"] + floor_seconds(f_bwd, q_bwd, device)
        out[f"{label}_fwd_bytes"] = q_fwd
        out[f"{label}_fwdbwd_bytes"] = q_fwd + q_bwd
    return out
