"""SaRA's gradient and optimizer-state memory against full fine-tuning (and LoRA r=8), measured.

On the linear layers of ``--blocks`` transformer blocks with SmolLM2-135M's shapes (q, o: 576×576;
k, v: 192×576; gate, up: 1536×576; down: 576×1536; random weights, std 0.02), one training step
(forward, backward of an MSE loss, optimizer step) is taken with

* full fine-tuning: ``torch.optim.AdamW`` on every weight;
* SaRA at each ``--budgets`` fraction: the sparse parametrization of ``clbench.strategies.sara``
  (a global threshold over all the weights) and its AdamW on the value vectors;
* LoRA r=8 (``clbench.nn.LoRALinear``) with AdamW, for scale.

After the step the script sums the bytes of what persists between steps: ``.grad`` tensors of the
trained parameters, the optimizer's state tensors, and SaRA's selection (indices or bool masks),
and prints them with their ratio to full fine-tuning. Transient memory (the full weight gradient
inside SaRA's backward, the out-of-place weight copy of each forward) is freed at the end of the
step and is not counted; see ``docs/strategies/sara.md``. CPU seconds per step are process time.
Usage::

    python perf/sara_memory.py [--blocks 2] [--budgets 0.01,0.05,0.2] [--threads 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from clbench.nn import LoRALinear
from clbench.strategies.sara.optimizer import SaRAAdamW
from clbench.strategies.sara.sparse import attach, detach_slot, selection_threshold

SHAPES = {"q": (576, 576), "k": (192, 576), "v": (192, 576), "o": (576, 576), "gate": (1536, 576), "up": (1536, 576), "down": (576, 1536)}


def build_layers(blocks: int, seed: int = 0) -> list[nn.Linear]:
    gen = torch.Generator().manual_seed(seed)
    layers = []
    for _ in range(blocks):
        for out_features, in_features in SHAPES.values():
            layer = nn.Linear(in_features, out_features, bias=False)
            with torch.no_grad():
                layer.weight.copy_(torch.randn(out_features, in_features, generator=gen) * 0.02)
            layer.weight.requires_grad_(False)
            layers.append(layer)
    return layers


def one_step(layers: list[nn.Module], params: list[torch.Tensor], optimizer: torch.optim.Optimizer, tokens: int = 8) -> float:
    """Forward and backward through every layer (each on its own input), then one optimizer step."""
    gen = torch.Generator().manual_seed(1)
    start = time.process_time()
    loss = torch.zeros(())
    for layer in layers:
        in_features = layer.in_features
        x = torch.randn(tokens, in_features, generator=gen)
        loss = loss + F.mse_loss(layer(x), torch.zeros(tokens, layer.out_features))
    loss.backward()
    optimizer.step()
    return time.process_time() - start


def tensor_bytes(tensors: Any) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if torch.is_tensor(t))


def held(params: list[torch.Tensor], optimizer: torch.optim.Optimizer) -> tuple[int, int]:
    grads = tensor_bytes(p.grad for p in params if p.grad is not None)
    state = tensor_bytes(v for s in optimizer.state.values() for v in s.values())
    return grads, state


def measure_full(blocks: int) -> dict[str, Any]:
    layers = build_layers(blocks)
    params = [layer.weight.requires_grad_(True) for layer in layers]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    seconds = one_step(layers, params, optimizer)
    grads, state = held(params, optimizer)
    return {"method": "full fine-tuning", "trained": sum(p.numel() for p in params), "grad_bytes": grads, "state_bytes": state,
            "selection_bytes": 0, "cpu_seconds": seconds}


def measure_sara(blocks: int, budget: float) -> dict[str, Any]:
    layers = build_layers(blocks)
    theta = selection_threshold([layer.weight for layer in layers], budget)
    slots = [attach(f"l{i}", layer, "weight", layer.weight.detach().abs() < theta) for i, layer in enumerate(layers)]
    params = [slot.update.values for slot in slots]
    optimizer = SaRAAdamW(params, lr=1e-4)
    seconds = one_step(layers, params, optimizer)
    grads, state = held(params, optimizer)
    selection = sum(slot.update.selection_bytes() for slot in slots)
    trained = sum(p.numel() for p in params)
    for slot in slots:
        detach_slot(slot)
    return {"method": f"sara budget {budget:g}", "trained": trained, "grad_bytes": grads, "state_bytes": state,
            "selection_bytes": selection, "cpu_seconds": seconds}


def measure_lora(blocks: int, rank: int = 8) -> dict[str, Any]:
    layers = [LoRALinear(layer, rank, 2.0 * rank) for layer in build_layers(blocks)]
    params = [p for layer in layers for p in (layer.lora_A, layer.lora_B)]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    seconds = one_step(layers, params, optimizer)
    grads, state = held(params, optimizer)
    return {"method": f"lora r={rank}", "trained": sum(p.numel() for p in params), "grad_bytes": grads, "state_bytes": state,
            "selection_bytes": 0, "cpu_seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blocks", type=int, default=2)
    parser.add_argument("--budgets", default="0.01,0.05,0.2")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="also write the numbers to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = [measure_full(args.blocks)]
    rows += [measure_sara(args.blocks, float(b)) for b in args.budgets.split(",") if b.strip()]
    rows.append(measure_lora(args.blocks))
    full = rows[0]
    full_total = full["grad_bytes"] + full["state_bytes"]
    print(f"{args.blocks} block(s) of SmolLM2-135M linear shapes: {full['trained']:,} weights; bytes held after one step")
    print(f"{'method':<20}{'trained':>12}{'grads MB':>10}{'state MB':>10}{'select MB':>11}{'total MB':>10}{'vs full':>9}{'CPU s':>8}")
    for row in rows:
        total = row["grad_bytes"] + row["state_bytes"] + row["selection_bytes"]
        row["total_bytes"] = total
        row["ratio_to_full"] = total / full_total
        print(f"{row['method']:<20}{row['trained']:>12,}{row['grad_bytes'] / 2**20:>10.2f}{row['state_bytes'] / 2**20:>10.2f}"
              f"{row['selection_bytes'] / 2**20:>11.2f}{total / 2**20:>10.2f}{row['ratio_to_full']:>9.3f}{row['cpu_seconds']:>8.2f}")
    print("state = AdamW moments (+ step counters); select = SaRA's indices (8 B each) or bool masks (1 B per weight), "
          "whichever is smaller per layer. The whole model has 30 blocks: multiply by 30 / blocks.")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"settings": vars(args), "rows": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
