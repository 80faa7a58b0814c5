"""Runner per-step overhead against a hand-written PyTorch loop on the same model and data.

Both loops train the same MLP from the same initial weights on the same Split-Digits task with
the same batch order (a seeded DataLoader generator), AdamW, no progress bar. The runner path is
``clbench.training.train_task`` with the ``finetune`` strategy: everything the runner does per
step. Repetitions alternate between the two loops so machine noise hits both alike; the figure
is the ratio of the medians. By default time is the process's CPU time on one torch thread
(``time.process_time``), which a busy shared machine disturbs far less than wall-clock time;
``--clock wall`` measures wall-clock time instead. Usage::

    python perf/runner_overhead.py [--reps 7] [--epochs 20] [--hidden 128] [--clock cpu|wall] [--threads 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from clbench import registry
from clbench.api import RunContext, TrainSettings
from clbench.data import build_stream
from clbench.training import train_task


def hand_written_loop(model: nn.Module, x: torch.Tensor, y: torch.Tensor, settings: TrainSettings, seed: int) -> int:
    loader = DataLoader(TensorDataset(x, y), batch_size=settings.batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed))
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr)
    model.train()
    steps = 0
    for _ in range(settings.epochs):
        for xb, yb in loader:
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            steps += 1
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--hidden", default="128", help="MLP hidden widths, e.g. 128 or 1024,1024")
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu", help="process CPU time (default) or wall-clock time")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--json", help="also write the numbers to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter

    spec, loaders = registry.load_benchmark("digits-split")
    stream = build_stream(spec, extra_loaders=loaders)
    experience = stream.tasks[0]
    data = experience.train
    settings = TrainSettings(epochs=args.epochs, batch_size=32, lr=1e-3, optimizer="adamw")
    strategy_cls, _ = registry.get_strategy("finetune")
    backbone = registry.build_backbone(f"mlp:{args.hidden}")
    backbone.bind(stream)
    initial = {k: v.clone() for k, v in backbone.model.state_dict().items()}
    strategy = strategy_cls(strategy_cls.Config(), RunContext(stream=stream, train=settings, device=torch.device("cpu"), seed=0))
    strategy.setup(backbone)

    times: dict[str, list[float]] = {"hand-written": [], "clbench runner": []}
    steps = {}
    for rep in range(args.reps + 1):  # the first repetition warms up both paths and is dropped
        for name in times:
            backbone.model.load_state_dict(initial)
            start = clock()
            if name == "hand-written":
                steps[name] = hand_written_loop(backbone.model, data.x, data.y, settings, seed=rep)
            else:
                steps[name] = train_task(strategy, backbone, data, experience, settings, torch.Generator().manual_seed(rep), progress=False).steps
            if rep:
                times[name].append(clock() - start)
    assert steps["hand-written"] == steps["clbench runner"], steps
    medians = {k: statistics.median(v) for k, v in times.items()}
    per_step = {k: 1e3 * v / steps[k] for k, v in medians.items()}
    ratio = medians["clbench runner"] / medians["hand-written"]
    print(f"MLP 64-{args.hidden.replace(',', '-')}-10, {steps['hand-written']} steps of batch 32, median of {args.reps}, torch threads {torch.get_num_threads()}, {args.clock} time")
    for name in times:
        print(f"  {name:15s} {medians[name]:.3f} s  ({per_step[name]:.3f} ms/step)")
    print(f"  runner / hand-written = {ratio:.3f}x  (goal <= 1.05x)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"hidden": args.hidden, "clock": args.clock, "threads": args.threads, "steps": steps["hand-written"], "seconds": medians, "ms_per_step": per_step, "ratio": ratio}, handle, indent=2)


if __name__ == "__main__":
    main()
