"""Which images an epoch shows, in which order, and which share a process takes: shared by both loaders.

The order and augmentation of epoch e depend only on (seed, e) (and the process's rank for its own
augmentation draws), so a resumed run sees exactly the batches an unbroken one would, and N processes
together see the batches of one.
"""

from __future__ import annotations

import torch

EPOCH_STRIDE, RANK_STRIDE = 1_000_003, 7919  # primes: (seed, epoch, rank) triples never share a generator seed


def epoch_generator(seed: int, epoch: int, rank: int | None = None) -> torch.Generator:
    """Epoch `epoch`'s generator: the shared order (rank None), or one process's own augmentation draws."""
    s = seed * EPOCH_STRIDE + epoch + (RANK_STRIDE * rank + 1 if rank is not None else 0)
    return torch.Generator().manual_seed(s)


def epoch_order(n: int, g: torch.Generator, *, shuffle: bool, weights: torch.Tensor | None = None) -> torch.Tensor | None:
    """Indices of one epoch: n weighted draws with replacement, a permutation, or None (in order)."""
    if weights is not None:  # balanced sampling: rare classes drawn more often
        return torch.multinomial(weights.double(), n, replacement=True, generator=g)
    return torch.randperm(n, generator=g) if shuffle else None


def rank_slice(i: int, batch_size: int, rank: int, world: int) -> slice:
    """This process's part of global batch i (positions in the epoch's order): batch_size // world of them."""
    local = batch_size // world
    start = i * batch_size + rank * local
    return slice(start, start + local)
