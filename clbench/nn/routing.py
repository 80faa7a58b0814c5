"""Load-balance bookkeeping shared by the rank-routed adapters with a routing bias (SMoRA, FlyLoRA).

Each such layer counts how often each rank is picked (``usage``) and nudges a per-rank bias after
every optimizer step (``update_routing_bias_()``, which returns the counts it used). This tracker
keeps the counts of the task being trained, so telemetry reports that task's balance.

Under torchrun each rank counts its own shard of the global batch; the counts are summed over
ranks before the bias moves, so every rank applies the bias update a one-process run applies.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from clbench import distributed


class RoutedLayer(Protocol):
    """What the tracker needs of a layer: rank usage counts and a load-balancing bias."""

    usage: torch.Tensor
    routing_bias: torch.Tensor

    def update_routing_bias_(self) -> torch.Tensor: ...


class RoutingBalance:
    """Per-task rank usage of routed layers, fed after every optimizer step."""

    def __init__(self, layers: dict[str, Any], rank: int) -> None:
        self.layers: dict[str, RoutedLayer] = layers
        self.counts = {name: torch.zeros(rank, dtype=torch.float64) for name in layers}

    def start_task(self) -> None:
        """Zero the task's counts and the layers' usage (evaluation passes do not steer the bias)."""
        for name in self.counts:
            self.counts[name].zero_()
        for layer in self.layers.values():
            layer.usage.zero_()

    def step(self) -> None:
        """Update every layer's routing bias and add the usage it was computed from (summed over ranks)."""
        distributed.all_reduce_sum_([layer.usage for layer in self.layers.values()])
        for name, layer in self.layers.items():
            self.counts[name] += layer.update_routing_bias_().cpu()

    def telemetry(self) -> dict[str, Any]:
        """Load balance of the task just trained (max/mean rank usage, averaged over layers) and the bias spread."""
        imbalance = [float(c.max() / c.mean()) for c in self.counts.values() if c.sum() > 0]
        spread = [float(layer.routing_bias.max() - layer.routing_bias.min()) for layer in self.layers.values()]
        return {
            "adapted_layers": len(self.layers),
            "usage_max_over_mean": sum(imbalance) / len(imbalance) if imbalance else 0.0,
            "routing_bias_spread": sum(spread) / len(spread) if spread else 0.0,
        }
