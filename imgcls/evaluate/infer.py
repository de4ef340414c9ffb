"""Inference over a loader: logits and labels, with optional test-time augmentation."""

from __future__ import annotations

import torch
from torch import nn

from imgcls.device import autocast
from imgcls.evaluate.tta import tta_logits


@torch.no_grad()
def predict_logits(model: nn.Module, loader, *, device: torch.device, amp_dtype=None,
                   limit_batches: int | None = None, tta: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (N, K) float32 and labels (N,) on the CPU, in loader order; `tta` is the TTA level."""
    model.eval()
    logits, labels = [], []
    for i, (x, y) in enumerate(loader):
        if limit_batches is not None and i >= limit_batches:
            break
        with autocast(device, amp_dtype):
            logits.append(tta_logits(model, x.to(device, non_blocking=True), tta).float().cpu())
        labels.append(y.cpu())
    return torch.cat(logits), torch.cat(labels)
