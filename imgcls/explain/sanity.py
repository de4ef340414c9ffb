"""Sanity check before a long run: can the model overfit one batch, and do the training images look right?

A correct pipeline (labels that belong to their images, a model that can represent them, a loss
and optimizer that move it) drives one fixed batch to 100% training accuracy within a few hundred
steps. If it does not, something is broken, and the message says where to look. The grid of
augmented training images with their labels catches broken augmentation and mislabelled data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from imgcls.errors import ImgclsError
from imgcls.evaluation.plots import plot_image_grid
from imgcls.tasks import require_classifier

HINTS = ("labels that do not belong to their images (check the class folders and splits/train.txt)",
         "a learning rate far too high or too low (run `imgcls lr-find`)",
         "a model whose output ignores its input (check forward, the head, frozen layers)",
         "inputs that are blank or badly normalized (look at sanity_batch.png)")


@dataclass
class SanityResult:
    passed: bool
    steps: int  # steps taken (until 100% or max_steps)
    accuracy: float  # on the batch, at the end
    losses: list[float] = field(default_factory=list)
    out_dir: Path | None = None

    def message(self) -> str:
        if self.passed:
            return f"sanity check passed: one batch overfit to 100% in {self.steps} steps"
        return (f"sanity check FAILED: one batch reached only {self.accuracy:.0%} after {self.steps} steps, so the "
                f"pipeline is broken. Look for: " + "; ".join(HINTS))


def overfit_batch(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, *,
                  max_steps: int = 300, shuffle_labels: bool = False, seed: int = 0) -> SanityResult:
    """Train on the batch (x, y) until every prediction is right; `shuffle_labels` re-deals the labels every step
    (a broken pipeline whose labels carry no information: it must fail)."""
    g = torch.Generator().manual_seed(seed)
    losses, acc = [], 0.0
    for step in range(1, max_steps + 1):
        model.train()
        target = y[torch.randperm(len(y), generator=g).to(y.device)] if shuffle_labels else y
        loss = F.cross_entropy(model(x), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        if step % 10 == 0 or step == max_steps:
            model.eval()
            with torch.no_grad():
                acc = float((model(x).argmax(1) == target).float().mean())
            if acc == 1.0 and not shuffle_labels:
                return SanityResult(passed=True, steps=step, accuracy=acc, losses=losses)
    return SanityResult(passed=False, steps=max_steps, accuracy=acc, losses=losses)


def denormalize(x: torch.Tensor, mean: list[float], std: list[float]) -> list:
    """Normalized (N, C, H, W) floats back to (H, W, C) uint8 arrays for display."""
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    imgs = ((x.detach().float().cpu() * s + m).clamp(0, 1) * 255).round().to(torch.uint8)
    return [im.permute(1, 2, 0).numpy() for im in imgs]


def sanity_check(*, data: Any = None, model: Any = None, optim: Any = None, aug: Any = None, loss: Any = None,
                 trainer: Any = None, batch_size: int = 32, max_steps: int = 300, lr: float | None = None,
                 out_dir: str | Path | None = None) -> SanityResult:
    """Overfit one un-augmented training batch with a fresh optimizer (AdamW at `lr`, default 1e-3),
    and draw a grid of augmented training images with their labels (sanity_batch.png)."""
    from imgcls.config import OptimConfig
    from imgcls.explain.common import setup, train_loader
    from imgcls.run_dir import new_run_dir
    from imgcls.training.optim import build_optimizer

    s = setup(data, model, optim, aug, loss, trainer)
    require_classifier(s.bundle.task, "imgcls sanity")
    out = Path(out_dir) if out_dir else new_run_dir(s.cfg.trainer.project, f"sanity-{s.bundle.name}")
    out.mkdir(parents=True, exist_ok=True)
    xa, ya = next(iter(train_loader(s, batch_size=min(32, len(s.bundle.train)))))
    classes = s.bundle.classes
    plot_image_grid(denormalize(xa, s.bundle.mean, s.bundle.std), [classes[int(c)] for c in ya], out / "sanity_batch.png",
                    title="augmented training images and their labels")
    x, y = next(iter(train_loader(s, batch_size=min(batch_size, len(s.bundle.train)), augment=False)))
    if len(torch.unique(y)) < 2:
        raise ImgclsError("the sanity batch holds a single class; use a larger batch_size")
    # A fresh AdamW: the recipe's optimizer may be tuned for long runs (schedules, huge Muon rates); this is a probe.
    opt = build_optimizer(s.model, OptimConfig(name="adamw", lr=lr or 1e-3, weight_decay=0.0))
    result = overfit_batch(s.model, opt, x.to(s.device), y.to(s.device), max_steps=max_steps)
    result.out_dir = out
    (out / "sanity.txt").write_text(result.message() + "\n")
    return result
