"""The learning-rate range test (L. Smith 2015; fastai's `lr_find`).

Train for up to `steps` mini-batches while the learning rate grows exponentially from `start_lr` to
`end_lr`; record the loss, smoothed by an exponential moving average (with bias correction); stop
when the smoothed loss exceeds `diverge` times its minimum. The suggestion is fastai's "valley"
rule: the learning rate two thirds of the way down the longest stretch of decreasing loss. The
model and optimizer are restored afterwards: the test leaves them as they were.
"""

from __future__ import annotations

import copy
import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn

from imgcls.errors import ImgclsError
from imgcls.tasks import require_classifier


@dataclass
class LRFindResult:
    lrs: list[float]
    losses: list[float]  # smoothed
    raw_losses: list[float]
    suggestion: float  # the valley rule's learning rate (for the group that trains at optim.lr)
    diverged: bool
    out_dir: Path | None = None


def valley(lrs: list[float], losses: list[float]) -> int:
    """Index inside the longest run of decreasing loss (fastai's valley rule): start + 2/3 of its length, roughly."""
    n = len(losses)
    lds, max_start, max_end = [1] * n, 0, 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
            if lds[max_end] < lds[i]:
                max_end, max_start = i, max(0, i - lds[i] + 1)  # the run's first index (fastai's is one too low)
    sections = (max_end - max_start) / 3
    return min(n - 1, max_start + int(sections) + int(sections / 2))


def run_range_test(model: nn.Module, optimizer: torch.optim.Optimizer, batches, *, device: torch.device,
                   start_lr: float = 1e-7, end_lr: float = 10.0, steps: int = 100, smooth: float = 0.98,
                   diverge: float = 4.0, class_weights: torch.Tensor | None = None,
                   main_lr: float | None = None) -> LRFindResult:
    """The range test on `batches` (an iterable of (x, y), cycled if shorter than `steps`); restores model and optimizer."""
    if not 0 < start_lr < end_lr:
        raise ImgclsError(f"lr-find needs 0 < start_lr < end_lr, got {start_lr} and {end_lr}")
    if steps < 5:
        raise ImgclsError(f"lr-find needs at least 5 steps, got {steps}")
    model_state = copy.deepcopy(model.state_dict())
    opt_state = copy.deepcopy(optimizer.state_dict())
    # Each group keeps its ratio to the main lr (e.g. Muon's filters, a bias lr scale, discriminative lrs).
    main = main_lr or max(g.get("base_lr", g["lr"]) for g in optimizer.param_groups)
    ratios = [g.get("base_lr", g["lr"]) / main for g in optimizer.param_groups]
    lrs, raw, smoothed = [], [], []
    avg, best, diverged = 0.0, math.inf, False
    was_training = model.training
    model.train()
    it = iter(batches)
    try:
        for i in range(steps):
            try:
                x, y = next(it)
            except StopIteration:
                it = iter(batches)
                x, y = next(it)
            lr = start_lr * (end_lr / start_lr) ** (i / (steps - 1))
            for g, r in zip(optimizer.param_groups, ratios):
                g["lr"] = lr * r
            x, y = x.to(device), y.to(device)
            loss = F.cross_entropy(model(x), y, weight=class_weights)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            value = float(loss.detach())
            avg = smooth * avg + (1 - smooth) * value
            s = avg / (1 - smooth ** (i + 1))
            lrs.append(lr)
            raw.append(value)
            smoothed.append(s)
            best = min(best, s)
            if not math.isfinite(s) or (i > 0 and s > diverge * best):
                diverged = True
                break
    finally:
        model.load_state_dict(model_state)
        optimizer.load_state_dict(opt_state)
        model.train(was_training)
    keep = [i for i, s in enumerate(smoothed) if math.isfinite(s)]
    if len(keep) < 3:
        raise ImgclsError("the loss was not finite from the start: lower start_lr, or check the data and model")
    lrs_k, sm_k = [lrs[i] for i in keep], [smoothed[i] for i in keep]
    return LRFindResult(lrs=lrs, losses=smoothed, raw_losses=raw, suggestion=lrs_k[valley(lrs_k, sm_k)], diverged=diverged)


def plot_lr_find(result: LRFindResult, path: str | Path) -> Path:
    fig = Figure(figsize=(6.5, 4.2))
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(result.lrs, result.raw_losses, color="#bbbbbb", lw=0.8, label="loss")
    ax.plot(result.lrs, result.losses, color="#4c72b0", lw=1.8, label="smoothed")
    ax.axvline(result.suggestion, color="#dd8452", ls="--", label=f"suggestion {result.suggestion:.2e}")
    finite = [v for v in result.losses if math.isfinite(v)]
    ax.set(xscale="log", xlabel="learning rate", ylabel="training loss", title="learning-rate range test",
           ylim=(min(finite) * 0.9, min(max(finite), 4 * min(finite)) * 1.05))
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    from imgcls.evaluation.plots import save_figure

    return save_figure(fig, path)


def lr_find(*, data: Any = None, model: Any = None, optim: Any = None, aug: Any = None, loss: Any = None,
            trainer: Any = None, start_lr: float = 1e-7, end_lr: float = 10.0, steps: int = 100,
            out_dir: str | Path | None = None) -> LRFindResult:
    """The range test on the model, data and optimizer `train` would use with the same configs.

    Writes lr_find.png and lr_find.csv (lr, loss, smoothed loss) into `out_dir` (default: a new
    runs/lr_find-<data>-<model> folder) and returns the suggestion, for the group that trains at `optim.lr`.
    """
    from imgcls.explain.common import setup, train_loader
    from imgcls.run_dir import new_run_dir

    s = setup(data, model, optim, aug, loss, trainer)
    require_classifier(s.bundle.task, "imgcls lr-find")
    result = run_range_test(s.model, s.optimizer, train_loader(s), device=s.device, start_lr=start_lr, end_lr=end_lr,
                            steps=steps, class_weights=s.class_weights, main_lr=s.cfg.optim.lr)
    out = Path(out_dir) if out_dir else new_run_dir(s.cfg.trainer.project, f"lr_find-{s.bundle.name}-{type(s.model).__name__.lower()}")
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "lr_find.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["lr", "loss", "smoothed_loss"])
        w.writerows(zip(result.lrs, result.raw_losses, result.losses))
    plot_lr_find(result, out / "lr_find.png")
    result.out_dir = out
    return result
