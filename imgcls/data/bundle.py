"""What a data source hands the rest of imgcls: splits of labelled images, classes and preprocessing facts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

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
    targets: list[str] | None = None  # per-sample target files beside the images (segmentation: mask paths); None: labels

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor | list[int]) -> Split:
        index = torch.as_tensor(index, dtype=torch.long)
        images = self.images[index] if self.images is not None else None
        stored = self.stored.take(index.numpy()) if self.stored is not None else None
        targets = [self.targets[i] for i in index.tolist()] if self.targets is not None else None
        return Split(labels=self.labels[index], ids=[self.ids[i] for i in index.tolist()], images=images, stored=stored,
                     targets=targets)


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
    task: str = "classify"  # what the targets are (imgcls.tasks): classify (a label per image) | segment (a mask)
    ignore_index: int = 255  # segmentation: the mask value that is no class (unlabelled, borders); loss and metrics skip it
    # A task's own loader `loader(bundle, split, train=, batch_size=, aug=, seed=, device=, workers=, rank=, world=)`,
    # set by its data source; None: the classification loaders (imgcls.data.loaders)
    loader: Callable[..., Any] | None = field(default=None, repr=False)
    # A task's check of its target files for `imgcls doctor`: check_targets(bundle) -> [{"split", "path", "error"}]
    check_targets: Callable[..., list[dict[str, str]]] | None = field(default=None, repr=False)

    @property
    def in_memory(self) -> bool:
        return self.train.images is not None

    def with_splits(self, **splits: Split | None) -> DataBundle:
        return replace(self, **splits)
