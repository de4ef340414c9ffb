"""Test-time augmentation: average the logits of a few views of each image.

Level 0: the image. Level 1: the image and its mirror. Level 2 (airbench's): level 1 averaged with
level 1 of the image shifted one pixel up-left and one pixel down-right (reflect padding): 6 views,
weighted 1/4 for the plain pair and 1/8 for each shifted view.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

TTA_VIEWS = {0: 1, 1: 2, 2: 6}  # forward passes per image at each level


def _mirror(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (model(x) + model(x.flip(-1)))


def tta_logits(model: nn.Module, x: torch.Tensor, level: int = 0) -> torch.Tensor:
    """Logits (B, K) of a batch x (B, C, H, W) averaged over the views of `level`."""
    return tta_and_plain_logits(model, x, level)[0]


def tta_and_plain_logits(model: nn.Module, x: torch.Tensor, level: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(TTA logits, logits of the plain view), both (B, K): the no-TTA score comes free with the TTA one."""
    if level not in TTA_VIEWS:
        raise ValueError(f"TTA level must be 0, 1 or 2, got {level}")
    plain = model(x)
    if level == 0:
        return plain, plain
    logits = 0.5 * (plain + model(x.flip(-1)))
    if level == 1:
        return logits, plain
    H, W = x.shape[-2:]
    xp = F.pad(x, (1, 1, 1, 1), mode="reflect")
    shifted = [_mirror(model, xp[:, :, :H, :W]), _mirror(model, xp[:, :, 2:, 2:])]
    return 0.5 * logits + 0.25 * (shifted[0] + shifted[1]), plain
