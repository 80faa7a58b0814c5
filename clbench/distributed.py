"""Data parallelism for one run: ``torchrun --nproc-per-node N -m clbench run ...`` (``torch.distributed``).

Every rank builds the same model from the same seeds and sees the same global batches: the
training sampler draws the permutation a one-process run would draw (the same generator, the
same ``RandomSampler``/``BatchSampler``) and gives rank ``r`` the examples ``r, r+N, r+2N, ...``
of each global batch. Each rank's loss is weighted by its share of the global batch, and the
gradients are summed over ranks (``all_reduce``) before clipping and the optimizer step (a
language model's loss, a mean over target tokens, is weighted by the rank's share of the global
batch's tokens instead: :func:`token_weighted_loss`), so
every rank applies the gradient of the global batch's mean loss — the one-process update, up to
the order of floating-point sums. We shard each batch rather than use ``DistributedSampler``
(which gives each rank its own slice of the epoch) because only then is the global batch, and so
the run, the same as on one process; the sampler is still torch's.

Parameters therefore stay identical on all ranks, and so does every strategy's state computed
from parameters and the whole task (EWC's Fisher, LwF's targets, replay's seeded buffer, MoRA's
bank, CoDyRA's prox and merge, CoSO's projections from the all-reduced gradient): each rank
computes it over the whole task, exactly as one process would. Evaluation is sharded: rank
``r`` scores a contiguous slice of each test set, and the per-example scores are gathered in
test-set order, so no example is dropped or counted twice whatever the test-set size.

Only rank 0 writes files, logs at INFO and draws progress bars. Outside torchrun every function
here is a no-op that costs nothing.
"""

from __future__ import annotations

import atexit
import logging
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, Sampler, Subset

from clbench.loading import LoaderOptions, NumberedBatches, NumberedDataset, SeededCollate

__all__ = ["all_reduce_gradients", "all_reduce_sum_", "barrier", "gather_scores", "global_loss", "is_distributed", "rank", "setup",
           "evaluation_is_sharded", "shard_for_eval", "sum_counts", "token_weighted_loss", "train_loader", "world_size", "world_size_requested"]


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size_requested() -> int:
    """The number of processes torchrun started (before the process group is joined)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_distributed() -> bool:
    return world_size() > 1


def setup(device: torch.device) -> torch.device:
    """Join the process group torchrun describes (``WORLD_SIZE`` > 1); returns this rank's device.

    gloo on the CPU, NCCL on CUDA (one GPU per rank: ``cuda:LOCAL_RANK``). Ranks other than 0
    log warnings only, so the run's log is written once.
    """
    if world_size_requested() <= 1:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        atexit.register(_leave)
    if rank() != 0:
        logging.getLogger("clbench").setLevel(logging.WARNING)
    return device


def _leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()  # torch warns about a group left open at exit


def barrier() -> None:
    if is_distributed():
        dist.barrier()


class _ShardedBatches(Sampler[list[int]]):
    """Rank ``r``'s examples ``r::N`` of each global batch; a rank left without one gets the
    batch's first example with weight 0 (every rank must take every step; the training loop
    skips that rank's forward pass and contributes a zero gradient, except under ``--fsdp``, where
    forward and backward are collectives and the stand-in runs with weight 0)."""

    def __init__(self, batches: BatchSampler, rank: int, world: int) -> None:
        self.batches, self.rank, self.world = batches, rank, world

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Any:
        for batch in self.batches:
            mine = batch[self.rank :: self.world]
            yield mine or batch[:1]


def train_loader(data: Dataset[Any], batch_size: int, generator: torch.Generator, collate: Callable[..., Any],
                 options: LoaderOptions | None = None) -> tuple[DataLoader[Any], Callable[[int], float]]:
    """The training loader, and the weight of this rank's loss at global batch ``j`` (counted from 0).

    On one process: the batches a plain ``DataLoader(shuffle=True)`` draws, and weight 1. Under
    torchrun: this rank's shard of the same global batches, weighted ``n_rank * N / n_global``
    so that summing the gradients over ranks and dividing by N gives the global batch's mean.
    """
    batches: Any = BatchSampler(RandomSampler(data, generator=generator), batch_size, drop_last=False)
    # Numbered batches collated under a per-batch seed: the same augmentation whatever the worker count (clbench.loading).
    kwargs = {"generator": generator, "collate_fn": SeededCollate(collate, generator.initial_seed()), **(options or LoaderOptions()).kwargs(data, True)}
    if not is_distributed():
        return DataLoader(NumberedDataset(data), batch_sampler=NumberedBatches(batches), **kwargs), lambda j: 1.0
    n, world, me = len(data), world_size(), rank()  # type: ignore[arg-type]
    per_epoch = math.ceil(n / batch_size)

    def weight(j: int) -> float:
        position = j % per_epoch
        size = min(batch_size, n - position * batch_size)
        mine = len(range(me, size, world))
        return mine * world / size

    return DataLoader(NumberedDataset(data), batch_sampler=NumberedBatches(_ShardedBatches(batches, me, world)), **kwargs), weight


BUCKET_ELEMENTS = 1 << 24  # gradients are all-reduced in flat buckets of up to 16M elements: one call per bucket, not per tensor


def all_reduce_gradients(params: Sequence[torch.nn.Parameter]) -> None:
    """Average the gradients over ranks (a parameter without a gradient counts as zeros).

    Gradients of one dtype and device are packed into flat buckets, so a step costs a few
    collective calls rather than one per parameter (what DDP's buckets do, without its overlap).
    """
    if not is_distributed():
        return
    world = world_size()
    grads = []
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        grads.append(p.grad)
    groups: dict[tuple[torch.dtype, torch.device], list[torch.Tensor]] = {}
    for g in grads:
        groups.setdefault((g.dtype, g.device), []).append(g)
    for group in groups.values():
        bucket: list[torch.Tensor] = []
        size = 0
        for g in [*group, None]:
            if g is not None and (not bucket or size + g.numel() <= BUCKET_ELEMENTS):
                bucket.append(g)
                size += g.numel()
                continue
            flat = torch.cat([t.reshape(-1) for t in bucket])
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            flat.div_(world)
            offset = 0
            for t in bucket:
                t.copy_(flat[offset : offset + t.numel()].view_as(t))
                offset += t.numel()
            if g is not None:
                bucket, size = [g], g.numel()


def all_reduce_sum_(tensors: Sequence[torch.Tensor]) -> None:
    """Sum each tensor over ranks in place, in one collective call (tensors of one dtype).

    For statistics every rank must agree on, such as the routing usage counts that steer SMoRA's
    and FlyLoRA's load-balancing bias: each rank counts its shard of the global batch, and the sum
    is what one process would have counted (exactly, for integer-valued counts).
    """
    if not is_distributed() or not tensors:
        return
    # NCCL reduces CUDA tensors only, gloo CPU tensors: the counts travel on the backend's device.
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    flat = torch.cat([t.reshape(-1).to(device) for t in tensors])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for t in tensors:
        t.copy_(flat[offset : offset + t.numel()].view_as(t))
        offset += t.numel()


def sum_counts(*counts: int) -> tuple[int, ...]:
    """Integer counts summed over ranks (one collective; the counts themselves on one process)."""
    if not is_distributed():
        return counts
    flat = torch.tensor(counts, dtype=torch.float64)
    all_reduce_sum_([flat])
    return tuple(int(v) for v in flat.tolist())


def global_loss(loss: torch.Tensor, weight: float) -> torch.Tensor:
    """The global batch's mean loss from each rank's weighted local loss (for logging and the
    non-finite check, so every rank takes the same decision)."""
    if not is_distributed():
        return loss
    value = loss.detach().float() * weight
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / world_size()


def token_weighted_loss(loss: torch.Tensor, terms: torch.Tensor | float) -> torch.Tensor:
    """For a loss that is a mean over ``terms`` terms (a language model's target tokens): this rank's
    loss weighted ``terms * N / total`` (``total`` summed over ranks), so that the gradients summed
    over ranks and divided by N are the gradient of the global batch's token mean, and whose value
    is that mean (one ``all_reduce`` of two numbers, as :func:`global_loss` makes one).

    Weighting by examples instead (:func:`train_loader`'s weight) would give each rank's tokens the
    weight of its examples: not the one-process loss when ranks hold different numbers of tokens.
    """
    if not is_distributed():
        return loss
    count = torch.as_tensor(terms, dtype=torch.float32, device=loss.device)
    pair = torch.stack([loss.detach().float() * count, count])
    dist.all_reduce(pair, op=dist.ReduceOp.SUM)
    total = pair[1].clamp_min(1.0)  # a global batch with no target token trains nothing
    mine = loss * (count * world_size() / total)
    return mine + (pair[0] / total - mine).detach()


def evaluation_is_sharded(model: torch.nn.Module) -> bool:
    """Whether each rank evaluates its own slice of the test sets (:func:`shard_for_eval`): under
    torchrun, unless ``--fsdp`` sharded the model, whose every forward is a collective, so every rank
    evaluates everything (:mod:`clbench.fsdp`). Counts a strategy keeps during evaluation are summed
    over ranks only when this is true."""
    from clbench import fsdp  # torch.distributed.tensor: only when asked

    return is_distributed() and not fsdp.is_sharded(model)


def shard_for_eval(data: Dataset[Any]) -> Dataset[Any]:
    """This rank's contiguous slice of a test set (rank order = test-set order)."""
    if not is_distributed():
        return data
    n, world, me = len(data), world_size(), rank()  # type: ignore[arg-type]
    per = math.ceil(n / world)
    return Subset(data, range(min(n, me * per), min(n, (me + 1) * per)))


def gather_scores(scores: torch.Tensor) -> torch.Tensor:
    """Every rank's per-example scores concatenated in rank order (on the CPU)."""
    if not is_distributed():
        return scores
    parts: list[Any] = [None] * world_size()
    dist.all_gather_object(parts, scores.detach().cpu())
    return torch.cat(parts)

