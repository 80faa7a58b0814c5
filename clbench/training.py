"""One task's training loop and the evaluation of every task, shared by all strategies.

The loop knows nothing about any particular strategy: it asks the strategy for the data, the
parameters, optionally the optimizer, and the loss of each micro-batch, and calls ``after_step``
after every optimizer step. Per-step work is kept to what a hand-written PyTorch loop does
(fetch, forward, backward, step) plus a few Python calls: losses stay on the device until the
task ends, so there is no per-step synchronisation.
"""

from __future__ import annotations

import contextlib
import math
import resource
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from clbench import distributed, fsdp
from clbench.api.backbone import Backbone
from clbench.api.benchmark import TrainSettings
from clbench.api.strategy import Strategy, TaskStats
from clbench.api.stream import Experience
from clbench.budget import steps_per_task
from clbench.errors import TrainingError, UsageError
from clbench.loading import LoaderOptions
from clbench.progress import progress_bar

MAX_LOSS_POINTS = 100
# On accelerators the loss is checked for NaN/inf every this many steps (one synchronisation);
# on the CPU every step, which costs nothing there.
NONFINITE_CHECK_EVERY = 16


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager[Any]:
    """The autocast context for ``amp`` (``none`` gives a no-op context)."""
    if amp == "none":
        return contextlib.nullcontext()
    if amp == "fp16" and device.type != "cuda":
        raise UsageError("amp=fp16 needs a CUDA device; use amp=bf16 on the CPU")
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def build_optimizer(params: list[torch.nn.Parameter], settings: TrainSettings) -> torch.optim.Optimizer:
    """The optimizer named by ``settings.optimizer``."""
    if settings.optimizer == "sgd":
        return torch.optim.SGD(params, lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay)
    if settings.optimizer == "adam":
        return torch.optim.Adam(params, lr=settings.lr, betas=settings.betas, weight_decay=settings.weight_decay)
    return torch.optim.AdamW(params, lr=settings.lr, betas=settings.betas, weight_decay=settings.weight_decay)


def cosine_scheduler(optimizer: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Cosine decay from the peak learning rate to 0 over ``total_steps``, no warm-up."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / max(total_steps, 1))))


def _batches(loader: DataLoader[Any]) -> Iterator[Any]:
    while True:  # cycle epochs; the caller stops at the step budget
        yield from loader


def train_task(strategy: Strategy, backbone: Backbone, data: Dataset[Any], experience: Experience, settings: TrainSettings,
               generator: torch.Generator, progress: bool = True, label: str = "", loader: LoaderOptions | None = None,
               on_step: Callable[[torch.Tensor, float], None] | None = None) -> TaskStats:
    """Train on ``data`` for one task with the strategy's loss and hooks.

    ``on_step(loss, lr)`` is called after every optimizer step with the step's loss (still on
    the device) and the learning rate it used (the experiment loggers' feed).
    """
    stats = TaskStats(examples=len(data))  # type: ignore[arg-type]
    params = strategy.trainable_parameters()
    total = steps_per_task(len(data), settings) if params and len(data) else 0  # type: ignore[arg-type]
    if total == 0:
        return stats
    optimizer = strategy.make_optimizer(params, settings) or build_optimizer(params, settings)
    scheduler = cosine_scheduler(optimizer, total) if settings.scheduler == "cosine" else None
    scaler = torch.amp.GradScaler("cuda") if settings.amp == "fp16" else None
    batches, share = distributed.train_loader(data, settings.batch_size, generator, backbone.collate, loader)  # share: 1 on one process
    model = backbone.model
    model.train()
    losses: list[torch.Tensor] = []
    start = time.perf_counter()
    bar = progress_bar(total, label, progress and distributed.rank() == 0, "step")
    micro = 0
    skip = settings.nonfinite_loss == "skip"
    on_cpu = backbone.device.type == "cpu"
    checked = 0
    every_rank_forwards = fsdp.is_sharded(model)  # each forward and backward of a sharded model is a collective
    for fetched, batch in enumerate(_batches(batches)):
        weight = share(fetched)
        terms = backbone.loss_terms(batch) if distributed.is_distributed() else None  # a mean over tokens: weighted by tokens
        if weight == 0.0 and not every_rank_forwards:
            # Under torchrun a short last batch leaves this rank without an example: it takes the step with a zero
            # gradient and no forward pass, so nothing a forward pass counts (routing usage, say) sees a stand-in example.
            zero = torch.zeros((), device=backbone.device)
            loss = distributed.global_loss(zero, 0.0) if terms is None else distributed.token_weighted_loss(zero, 0.0)
        else:  # under --fsdp a rank without an example still runs the stand-in's forward and backward, weighted 0: they are collectives
            batch = backbone.move_batch(batch)
            with autocast(backbone.device, settings.amp):
                loss = strategy.loss(batch, experience)
            if terms is not None:
                loss = distributed.token_weighted_loss(loss, terms if weight else 0.0)
            elif distributed.is_distributed():  # this rank's share of the global batch: its gradient, the global batch's value
                mine = loss * weight
                loss = mine + (distributed.global_loss(loss, weight) - mine).detach()
        if skip and not bool(torch.isfinite(loss.detach()).all()):
            stats.skipped_steps += 1
            if stats.skipped_steps > total:
                raise TrainingError(f"training loss stayed non-finite in task {experience.index + 1} ({experience.name}): {stats.skipped_steps} "
                                    "batches skipped; the run stopped and is not complete; lower lr")
            continue
        scaled = loss / settings.grad_accum if settings.grad_accum > 1 else loss
        if scaled.requires_grad:  # not on a rank without examples (all_reduce_gradients counts its gradients as zeros)
            (scaler.scale(scaled) if scaler else scaled).backward()
        micro += 1
        if micro % settings.grad_accum:
            continue
        distributed.all_reduce_gradients(params)
        if scaler:
            scaler.unscale_(optimizer)
        if settings.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        lr = float(optimizer.param_groups[0]["lr"])  # the rate this step used, before the schedule moves it
        if scheduler is not None:
            scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        strategy.after_step(stats.steps, experience)
        losses.append(loss.detach())
        if on_step is not None:
            on_step(loss, lr)
        stats.steps += 1
        bar.update(1)
        if not skip and (on_cpu or stats.steps % NONFINITE_CHECK_EVERY == 0 or stats.steps >= total):
            if not on_cpu or not math.isfinite(loss.item()):  # on the CPU a scalar read is the cheapest check
                _check_finite(losses, checked, experience, total)
            checked = stats.steps
        if stats.steps >= total:
            break
    bar.close()
    if skip and not all(bool(torch.isfinite(p).all()) for p in params):
        raise TrainingError(f"trainable weights became non-finite during task {experience.index + 1} ({experience.name}) although "
                            f"{stats.skipped_steps} non-finite batches were skipped; the run stopped and is not complete; lower lr")
    stats.train_seconds = time.perf_counter() - start
    stats.final_loss, stats.loss_curve = summarise_losses(torch.stack(losses).float().cpu().tolist())
    return stats


def summarise_losses(losses: Sequence[float]) -> tuple[float | None, list[float]]:
    """A task's final loss (mean of the last 10 steps) and its curve (at most 100 evenly spaced points)."""
    if not losses:
        return None, []
    final = float(torch.tensor(losses[-min(len(losses), 10):], dtype=torch.float32).mean())
    stride = max(1, math.ceil(len(losses) / MAX_LOSS_POINTS))
    return final, [round(float(v), 6) for v in losses[::stride]]


def _check_finite(losses: list[torch.Tensor], start: int, experience: Experience, total: int) -> None:
    """Stop the run at the first NaN/inf loss in ``losses[start:]``, naming task and step."""
    window = torch.stack(losses[start:]).float()
    bad = (~torch.isfinite(window)).nonzero()
    if len(bad):
        offset = int(bad[0, 0])
        value = float(window[offset])
        raise TrainingError(f"training loss became {value} in task {experience.index + 1} ({experience.name}) at step {start + offset + 1} "
                            f"of {total}; the run stopped and is not complete; lower lr (or set -S nonfinite_loss=skip)")


def evaluate(backbone: Backbone, experiences: Sequence[Experience], settings: TrainSettings, progress: bool = True, label: str = "",
             strategy: Strategy | None = None, per_example: list[np.ndarray] | None = None, loader: LoaderOptions | None = None) -> list[float]:
    """Score every experience's test set: one row of the accuracy matrix (fractions in [0, 1]).

    Batches come from :meth:`Backbone.eval_batches` (LLMs: tokenized once per run, longest
    first) and run under ``torch.inference_mode`` (``torch.no_grad`` on a model ``--fsdp`` sharded,
    which every rank evaluates whole) and the run's autocast (``settings.amp``), as training does.
    When ``strategy`` is given, its ``eval_task_start`` / ``eval_task_end`` hooks bracket each
    experience (strategies that record routing statistics per evaluated task use them). When
    ``per_example`` is a list, each experience's per-example scores (float32, in test-set order
    whatever order the batches ran in) are appended to it, for confidence intervals
    (:mod:`clbench.example_scores`).
    """
    model = backbone.model
    was_training = model.training
    model.eval()
    backbone.eval_start()
    row = []
    # Under --fsdp every forward is a collective: every rank scores the whole test set, the same
    # batches in the same order, so generation lengths cannot differ between ranks (clbench.fsdp).
    sharded = distributed.evaluation_is_sharded(model)
    whole = distributed.is_distributed() and not sharded
    no_grad = torch.no_grad if whole else torch.inference_mode  # FSDP's gathered weights must stay usable by training
    bar = progress_bar(sum(len(e.test) for e in experiences), label, progress and distributed.rank() == 0, "ex")  # type: ignore[arg-type]
    for exp in experiences:
        if strategy is not None:
            strategy.eval_task_start(exp)
        shard = distributed.shard_for_eval(exp.test) if sharded else exp.test  # under torchrun, this rank's contiguous slice
        kept: list[torch.Tensor] = []
        where: list[int] = []
        count = 0
        for indices, batch in backbone.eval_batches(shard, settings.eval_batch_size, (loader or LoaderOptions()).kwargs(shard)):
            batch = backbone.move_batch(batch)
            with no_grad(), autocast(backbone.device, settings.amp):
                scores = backbone.score(batch, exp).detach().float().reshape(-1)
            kept.append(scores)
            where.extend(range(count, count + len(scores)) if indices is None else indices)
            count += len(scores)
            bar.update(len(scores))
        flat = torch.cat(kept).cpu() if kept else torch.zeros(0)
        ordered = torch.empty_like(flat)
        ordered[torch.tensor(where, dtype=torch.long)] = flat  # back to test order
        if sharded:  # every rank's slice, in test-set order: the counts are the whole test set's
            ordered = distributed.gather_scores(ordered)
            count = len(ordered)
        row.append(float(ordered.double().sum()) / count if count else float("nan"))
        if per_example is not None:
            per_example.append(ordered.numpy().astype(np.float32))
        if strategy is not None:
            strategy.eval_task_end(exp)
    bar.close()
    model.train(was_training)
    return row


def peak_memory_mb(device: torch.device) -> tuple[float, str]:
    """Peak memory so far: CUDA allocator peak on GPUs, process peak RSS on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda-max-allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "cpu-peak-rss"
