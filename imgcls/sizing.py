"""A recipe sized to the machine: time each candidate net's training step, train the largest that fits.

The same training step takes 5x longer on one 2-core CPU than on another (docs/benchmarks.md), so
a time-budgeted recipe tuned on one machine trains too few epochs on a slower one and leaves
accuracy unused on a faster one. With `trainer.size_choices` (model.args overrides, largest net
first) and `trainer.time_budget`, a run times one training step and one test-time (TTA) batch of
each candidate on its own data, in its first seconds, and keeps the first candidate that trains
`trainer.size_min_epochs` epochs in the time left after the test evaluation; when none does, the
last (smallest). The time schedule (`Budget`) then fits the chosen net's epochs to the budget.

`choose_size` is the rule (plain numbers in, a choice out); `measure_cost` the measurement.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from imgcls.tta import tta_logits

PROBE_TRAIN = 256  # images per timed training step (the real batch would cost seconds per candidate on a slow CPU)
PROBE_EVAL = 200  # images per timed test batch
# What a training image costs at the recipe's batch (1000) over its cost in the 256-image probe: measured
# 1.09 on the fast net (an AMD EPYC with AVX-512: 97 s against 89 s per 50,000 images, docs/benchmarks.md).
TRAIN_PROBE_FACTOR = 1.09
BF16_MIN_SPEEDUP = 1.1  # bf16 autocast on a CPU is used only when its training step is at least this much faster


@dataclass
class Cost:
    """What one image costs a candidate net on this machine (seconds)."""

    args: dict[str, Any]  # the candidate: model.args overrides
    train_image: float  # forward + backward, per training image
    eval_image: float  # forward over all TTA views, per test image


@dataclass
class SizeChoice:
    cost: Cost
    epochs: float  # epochs that fit in the time left
    measured: list[tuple[Cost, float]]  # every candidate measured, with its epochs
    seconds: float  # the time left for training and the test evaluation when the choice was made

    def lines(self, min_epochs: float) -> list[str]:
        out = [f"sized to this machine: {_args(c.args)} would train {e:.1f} epochs "
               f"({c.train_image * 1e3:.2f} ms per training image, {c.eval_image * 1e3:.2f} ms per test image)"
               for c, e in self.measured]
        fits = self.epochs >= min_epochs
        out.append(f"sized to this machine: training {_args(self.cost.args)} for ~{self.epochs:.1f} epochs in "
                   f"{self.seconds:.0f}s ({'the largest net with' if fits else 'none reaches'} >= {min_epochs:g} "
                   f"epochs{'' if fits else ': the smallest'}; trainer.size_choices=null keeps model.args as given)")
        return out


def _args(args: dict[str, Any]) -> str:
    return " ".join(f"model.{k}={v}" for k, v in args.items()) or "the model as given"


def epochs_that_fit(cost: Cost, *, seconds: float, n_train: int, n_eval: int) -> float:
    """Epochs of `n_train` images that fit in `seconds` after scoring `n_eval` test images."""
    return max(0.0, seconds - cost.eval_image * n_eval) / max(cost.train_image * n_train, 1e-12)


def choose_size(costs: Iterable[Cost], *, seconds: float | Callable[[], float], n_train: int, n_eval: int,
                min_epochs: float) -> SizeChoice:
    """The first candidate (largest first) that trains `min_epochs` epochs in the time left, else the last.

    `costs` may be a generator that measures each candidate as it is asked for: candidates after the
    chosen one are never measured. `seconds` is a number or a function returning the time left now
    (measuring spends some of it).
    """
    left = seconds if callable(seconds) else (lambda: seconds)
    measured: list[tuple[Cost, float]] = []
    for cost in costs:
        s = left()
        epochs = epochs_that_fit(cost, seconds=s, n_train=n_train, n_eval=n_eval)
        measured.append((cost, epochs))
        if epochs >= min_epochs:
            return SizeChoice(cost, epochs, measured, s)
    if not measured:
        raise ValueError("no candidate to choose from")
    cost, epochs = measured[-1]
    return SizeChoice(cost, epochs, measured, left())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure_cost(net: nn.Module, x: torch.Tensor, y: torch.Tensor, *, tta: int, eval_images: int = PROBE_EVAL,
                 dtype: torch.dtype | None = None) -> tuple[float, float]:
    """(seconds per training image, seconds per test image) of `net` on batch (x, y), on x's device.

    Each pass runs twice and the second is timed: the first pays for one-off kernel set-up (oneDNN
    primitives, cuDNN autotuning). The training pass is forward + backward (the optimizer's step is
    under 1% of a step on the nets sized here). Gradients are dropped afterwards. `dtype`: autocast
    (bf16), as the run will train.
    """
    cast = (lambda: torch.autocast(x.device.type, dtype=dtype)) if dtype is not None else contextlib.nullcontext
    was_training = net.training
    times = []
    net.train()
    for _ in range(2):
        t = time.perf_counter()
        with cast():
            loss = F.cross_entropy(net(x), y)
        loss.backward()
        _sync(x.device)
        times.append(time.perf_counter() - t)
    net.zero_grad(set_to_none=True)
    train_image = times[-1] / len(x) * TRAIN_PROBE_FACTOR
    xe = x[:eval_images]
    net.eval()
    with torch.no_grad(), cast():
        for _ in range(2):
            t = time.perf_counter()
            tta_logits(net, xe, tta)
            _sync(x.device)
            eval_time = time.perf_counter() - t
    net.train(was_training)
    return train_image, eval_time / len(xe)


def measured_costs(candidates: list[dict[str, Any]], build: Callable[[dict[str, Any]], nn.Module], x: torch.Tensor,
                   y: torch.Tensor, *, tta: int, dtype: torch.dtype | None = None) -> Iterator[Cost]:
    """Build and time each candidate in turn (lazily: for `choose_size`)."""
    for args in candidates:
        net = build(args)
        train_image, eval_image = measure_cost(net, x, y, tta=tta, dtype=dtype)
        del net
        yield Cost(dict(args), train_image, eval_image)


def bf16_speedup(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """fp32 seconds over bf16-autocast seconds of one training step of `net` on (x, y) (> 1: bf16 is faster)."""
    fp32 = measure_cost(net, x, y, tta=0, eval_images=1)[0]
    bf16 = measure_cost(net, x, y, tta=0, eval_images=1, dtype=torch.bfloat16)[0]
    return fp32 / bf16
