"""A loader for small images that keeps the whole split as one uint8 tensor (on the training device).

Each batch is gathered, converted to float, augmented as a whole (flip, translate) and normalized,
with no per-image Python work: the trick that makes CIFAR-scale training fast (as in
KellerJordan/cifar10-airbench and D. Page's "How to train your ResNet").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from imgcls.data.augment import apply_policy
from imgcls.data.sampling import epoch_generator, epoch_order, rank_slice


def random_flip(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Mirror a random half of the batch left-right. x: (B, C, H, W)."""
    return flip_where(x, torch.rand(x.shape[0], generator=g) < 0.5)


def flip_where(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mirror the images of x (B, C, H, W) where mask (B,) is true."""
    return torch.where(mask.to(x.device).view(-1, 1, 1, 1), x.flip(3), x)


def random_translate(x: torch.Tensor, pad: int, g: torch.Generator, size: int | None = None) -> torch.Tensor:
    """Reflect-pad by `pad` and crop each image at its own random offset. x: (B, C, H, W) -> (B, C, s, s).

    The crop side `size` defaults to the image's own (a pure translation); a smaller side gives
    cheaper steps at the same object scale (progressive cropping).
    """
    B, C, H, W = x.shape
    h, w = (size, size) if size else (H, W)
    xp = F.pad(x, (pad, pad, pad, pad), mode="reflect") if pad else x  # (B, C, H+2p, W+2p)
    dy = torch.randint(0, H + 2 * pad - h + 1, (B,), generator=g).to(x.device)
    dx = torch.randint(0, W + 2 * pad - w + 1, (B,), generator=g).to(x.device)
    rows = dy[:, None] + torch.arange(h, device=x.device)  # (B, h)
    cols = dx[:, None] + torch.arange(w, device=x.device)  # (B, w)
    xr = xp.gather(2, rows[:, None, :, None].expand(B, C, h, W + 2 * pad))
    return xr.gather(3, cols[:, None, None, :].expand(B, C, h, w))


class TensorLoader:
    """Iterate (x, y) batches: x float (B, C, H, W) normalized, y int64 (B,), both on `device`.

    The order and augmentation of epoch e depend only on (seed, e), so a resumed run sees exactly
    the batches an unbroken one would.
    """

    def __init__(
        self,
        images: torch.Tensor,  # (N, C, H, W) uint8
        labels: torch.Tensor,  # (N,) int64
        *,
        batch_size: int,
        mean: list[float],
        std: list[float],
        shuffle: bool = False,
        drop_last: bool = False,
        flip: bool = False,
        flip_mode: str = "random",  # or "alternate": a fixed random half mirrored in even epochs, the other half in odd ones
        crop_pad: int = 0,
        seed: int = 0,
        device: str | torch.device = "cpu",
        channels_last: bool = False,
        sample_weights: torch.Tensor | None = None,  # (N,) draw probabilities: sample with replacement instead of shuffling
        policy=None,  # a torchvision policy (e.g. TrivialAugmentWide) applied per image to the uint8 images
        policy_group: int = 1,  # images sharing one draw of the policy
        # training ops on normalized batches, each (x, generator) -> x: `augment.tensor_batch_ops(aug)` (e.g. cutout)
        batch_ops: Sequence[Callable[[torch.Tensor, torch.Generator], torch.Tensor]] = (),
        rank: int = 0,  # multi-process training: this process's share (see `shard`)
        world: int = 1,
    ):
        self.images = images.to(device)
        self.sample_weights = sample_weights.double() if sample_weights is not None else None
        self.labels = labels.to(device)
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.flip, self.crop_pad, self.seed, self.epoch = flip, crop_pad, seed, 0
        self.policy, self.policy_group, self.batch_ops = policy, policy_group, list(batch_ops)
        # With `world` processes: training takes this rank's 1/world slice of every global batch (all
        # ranks draw the same order, so the slices are disjoint and together are the one-process batch);
        # evaluation takes a contiguous 1/world block of the data (gathered in rank order afterwards).
        self.rank, self.world = rank, world
        if world > 1 and shuffle:
            if batch_size % world:
                raise ValueError(f"the batch size {batch_size} must be a multiple of the {world} processes")
            self.drop_last = True  # every process must make the same number of steps
        n = len(labels)
        self.block = slice(rank * n // world, (rank + 1) * n // world)
        self.channels_last = channels_last
        if flip_mode not in ("random", "alternate"):
            raise ValueError(f"flip_mode must be random or alternate, got {flip_mode!r}")
        self.flip_mode = flip_mode
        self.crop_size: int | None = None
        # Alternating flip (Jordan 2024, sec. 3.6): every image is seen both ways round in any two epochs.
        # (kept on the device: indexing it with the batch's indices needs no device-to-host sync)
        self._flip_base = (torch.rand(len(labels), generator=torch.Generator().manual_seed(seed)) < 0.5).to(device)
        c = images.shape[1]
        self.mean = torch.tensor(mean, device=device).view(1, c, 1, 1) * 255  # on uint8 scale
        self.std = torch.tensor(std, device=device).view(1, c, 1, 1) * 255

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def set_crop(self, size: int | None) -> None:
        """Train on random size x size crops (None: full images); see AugConfig.small_crop."""
        self.crop_size = size if size and size < self.images.shape[-1] else None

    def __len__(self) -> int:
        n = len(self.labels) if self.world == 1 or self.shuffle else self.block.stop - self.block.start
        n = n / self.batch_size
        return int(n) if self.drop_last else math.ceil(n)

    def __iter__(self):
        g = epoch_generator(self.seed, self.epoch)
        order = epoch_order(len(self.labels), g, shuffle=self.shuffle, weights=self.sample_weights)
        order = order.to(self.labels.device) if order is not None else None
        if self.world > 1:  # the order is shared; augmentation draws are each process's own
            g = epoch_generator(self.seed, self.epoch, self.rank)
        for i in range(len(self)):
            if self.world > 1 and order is not None:  # this rank's slice of global batch i
                sl = rank_slice(i, self.batch_size, self.rank, self.world)
            elif self.world > 1:  # evaluation: batches over this rank's block
                start = self.block.start + i * self.batch_size
                sl = slice(start, min(start + self.batch_size, self.block.stop))
            else:
                sl = slice(i * self.batch_size, (i + 1) * self.batch_size)
            idx = order[sl] if order is not None else None
            x = self.images[idx] if idx is not None else self.images[sl]
            if self.policy is not None:
                x = apply_policy(x, self.policy, g, self.policy_group)
            x = x.float()
            y = self.labels[idx] if idx is not None else self.labels[sl]
            if self.flip and self.flip_mode == "alternate":
                base = self._flip_base[idx] if idx is not None else self._flip_base[sl]
                x = flip_where(x, base ^ bool(self.epoch % 2))
            elif self.flip:
                x = random_flip(x, g)
            if self.crop_pad or self.crop_size:
                x = random_translate(x, self.crop_pad, g, self.crop_size)
            x = (x - self.mean) / self.std
            for op in self.batch_ops:
                x = op(x, g)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y
