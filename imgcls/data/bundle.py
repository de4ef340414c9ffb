"""What a data source hands the rest of imgcls: splits of labelled images, classes and preprocessing facts."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from imgcls.data.store import Stored


@dataclass
class Split:
    """One split. Small images live in `images` as uint8 (N, C, H, W); large ones are files in `ids`."""

    labels: torch.Tensor  # (N,) int64
    ids: list[str]  # file path of each sample, or "<dataset>:<split>:<index>" for array data sets
    images: torch.Tensor | None = None  # (N, C, H, W) uint8, or None when the images stay on disk
    # photos decoded once at a bit above the training size (imgcls.data.store), read memory-mapped; None: decode the files
    stored: Stored | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor | list[int]) -> Split:
        index = torch.as_tensor(index, dtype=torch.long)
        images = self.images[index] if self.images is not None else None
        stored = self.stored.take(index.numpy()) if self.stored is not None else None
        return Split(labels=self.labels[index], ids=[self.ids[i] for i in index.tolist()], images=images, stored=stored)


@dataclass
class DataBundle:
    """Train/val/test splits plus what a model and `Predictor` need to know about them."""

    name: str
    classes: list[str]
    channels: int  # 1 or 3, after conversion to what the model takes
    image_size: tuple[int, int]  # (H, W) the model sees
    mean: list[float]
    std: list[float]
    train: Split
    val: Split | None = None
    test: Split | None = None
    resize: int | None = None  # large images: shorter side before the center crop at evaluation
    flip_ok: bool = True  # whether mirrored images are still valid examples (not for digits or text)
    notes: list[str] = field(default_factory=list)  # things the user should know (skipped files, ...)
    default_test_fraction: float = 0.0  # share of train held out as test when there is no official test split

    @property
    def in_memory(self) -> bool:
        return self.train.images is not None

    def with_splits(self, **splits: Split | None) -> DataBundle:
        return replace(self, **splits)
