"""Inference over a loader: logits and labels, with optional test-time augmentation."""

from __future__ import annotations

import torch
from torch import nn

from imgcls.device import autocast
from imgcls.progress import progress_bar
from imgcls.tta import tta_and_plain_logits


@torch.no_grad()
def predict_logits(model: nn.Module, loader, *, device: torch.device, amp_dtype=None,
                   limit_batches: int | None = None, tta: int = 0,
                   with_plain: bool = False, desc: str | None = None, progress: bool | None = None) -> tuple[torch.Tensor, ...]:
    """Logits (N, K) float32 and labels (N,) on the CPU, in loader order; `tta` is the TTA level.

    `with_plain=True` also returns the logits of the plain (un-augmented) view, at no extra cost.
    With `desc`, a progress bar of that name (`imgcls.progress`: on a terminal unless `progress` says).
    """
    model.eval()
    logits, plain, labels = [], [], []
    batches = progress_bar(loader, desc=desc, unit="batch", progress=progress) if desc else loader
    for i, (x, y) in enumerate(batches):
        if limit_batches is not None and i >= limit_batches:
            break
        with autocast(device, amp_dtype):
            out, out_plain = tta_and_plain_logits(model, x.to(device, non_blocking=True), tta)
        logits.append(out.float().cpu())
        plain.append(out_plain.float().cpu())
        labels.append(y.cpu())
    if with_plain:
        return torch.cat(logits), torch.cat(labels), torch.cat(plain)
    return torch.cat(logits), torch.cat(labels)
