"""Augmentations beyond flip and crop: torchvision's policies, cutout, and MixUp / CutMix of batches.

The policies (TrivialAugment, RandAugment, AutoAugment) and MixUp/CutMix are torchvision's
transforms v2; what is written here is only how they meet the tensor-resident loader: a policy
runs per image on uint8 tensors under a generator seeded by the loader (a resumed run sees the same
images), and cutout is vectorized over the batch.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torchvision.transforms import v2

from imgcls.config import AUG_POLICIES
from imgcls.errors import ImgclsError


def policy_transform(name: str, small: bool = True):
    """torchvision's augmentation policy `name` (see AugConfig.policy), or None for "none"."""
    if name == "none":
        return None
    if name == "trivialaugment":
        return v2.TrivialAugmentWide()
    if name == "randaugment":
        return v2.RandAugment()
    if name == "autoaugment":
        return v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10 if small else v2.AutoAugmentPolicy.IMAGENET)
    raise ImgclsError(f"aug.policy={name!r} is not one of: {', '.join(AUG_POLICIES)}")


def apply_policy(images: torch.Tensor, transform, g: torch.Generator, group: int = 1) -> torch.Tensor:
    """Uint8 images (B, C, H, W) through `transform`, one draw per `group` consecutive images, reproducibly from `g`.

    group=1 gives every image its own operation and magnitude (torchvision's semantics); larger
    groups share a draw (the batch order is random, so any image still meets any operation) and
    cost ~group x fewer calls. torchvision draws from torch's global generator; it runs here under a
    fork of that generator seeded from `g`, so the batch depends only on the loader's seed and epoch.
    """
    seed = int(torch.randint(0, 2**62, (1,), generator=g))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.cat([transform(chunk) for chunk in images.cpu().split(group)]).to(images.device)


def cutout(x: torch.Tensor, size: int, g: torch.Generator) -> torch.Tensor:
    """Zero a size x size square (clipped at the borders) at a random centre of each image of (B, C, H, W).

    Applied after normalization, zero is the data set's mean colour.
    """
    b, _, h, w = x.shape
    cy = torch.randint(0, h, (b, 1, 1), generator=g).to(x.device)
    cx = torch.randint(0, w, (b, 1, 1), generator=g).to(x.device)
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    lo = size // 2
    inside = (ys >= cy - lo) & (ys < cy - lo + size) & (xs >= cx - lo) & (xs < cx - lo + size)
    return x.masked_fill(inside.unsqueeze(1), 0.0)


# ------------------------------------------------------------------ the training augmentation, per loader
# A new augmentation is an AugConfig field (imgcls/config.py) plus its operation here, added to
# `tensor_batch_ops` (small images: whole normalized batches) and `photo_ops` (large images: one
# normalized image tensor); the loaders apply whatever these return, in order.


def tensor_batch_ops(aug) -> list[Callable[[torch.Tensor, torch.Generator], torch.Tensor]]:
    """The tensor loader's ops on normalized float batches (B, C, H, W), each drawing from the loader's generator."""
    ops: list[Callable[[torch.Tensor, torch.Generator], torch.Tensor]] = []
    if aug.cutout:
        ops.append(functools.partial(_cutout_op, size=aug.cutout))
    return ops


def photo_ops(aug, size: tuple[int, int]) -> list[Callable[[torch.Tensor], torch.Tensor]]:
    """The file loader's ops on one normalized image tensor (C, H, W) of `size`, after crop, flip and policy."""
    ops: list[Callable[[torch.Tensor], torch.Tensor]] = []
    if aug.cutout:  # a square of side `cutout`, erased to 0 (the mean colour): RandomErasing with a fixed area
        area = min(1.0, aug.cutout * aug.cutout / (size[0] * size[1]))
        ops.append(v2.RandomErasing(p=1.0, scale=(area, area), ratio=(1.0, 1.0), value=0))
    return ops


def _cutout_op(x: torch.Tensor, g: torch.Generator, size: int) -> torch.Tensor:
    return cutout(x, size, g)  # looked up at call time: tests can watch it


class BatchMix:
    """MixUp and/or CutMix of a batch (torchvision v2): images mixed, labels become soft (B, K) targets.

    With both on, each batch gets one of the two at random. Draws use torch's global generator,
    which `train` seeds.
    """

    def __init__(self, num_classes: int, mixup: float = 0.0, cutmix: float = 0.0):
        ops = []
        if mixup > 0:
            ops.append(v2.MixUp(alpha=mixup, num_classes=num_classes))
        if cutmix > 0:
            ops.append(v2.CutMix(alpha=cutmix, num_classes=num_classes))
        if not ops:
            raise ImgclsError("BatchMix needs aug.mixup > 0 or aug.cutmix > 0")
        self.op = ops[0] if len(ops) == 1 else v2.RandomChoice(ops)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if y.ndim != 1:
            return x, y
        return self.op(x, y)


def batch_mix(cfg, num_classes: int) -> BatchMix | None:
    """The MixUp/CutMix of AugConfig `cfg`, or None when both are off."""
    return BatchMix(num_classes, cfg.mixup, cfg.cutmix) if cfg.mixup > 0 or cfg.cutmix > 0 else None
