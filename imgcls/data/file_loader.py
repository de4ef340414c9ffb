"""Loading large images from files: a Dataset over paths, torchvision transforms v2, a DataLoader."""

from __future__ import annotations

import warnings

import torch
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler
from torchvision.transforms import v2

from imgcls.data.image_io import open_image
from imgcls.data.sampling import epoch_generator, epoch_order, rank_slice
from imgcls.errors import ImgclsError


def train_transform(size: tuple[int, int], mean, std, *, flip: bool, scale: list[float], policy=None,
                    after: list | None = None) -> v2.Compose:
    """RandomResizedCrop, flip, an optional policy (TrivialAugment, ...), normalization, then the ops `after`
    (`augment.photo_ops(aug, size)`, e.g. cutout)."""
    ops = [v2.RandomResizedCrop(size, scale=tuple(scale), antialias=True)]
    if flip:
        ops.append(v2.RandomHorizontalFlip())
    if policy is not None:
        ops.append(policy)
    ops += [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std), *(after or [])]
    return v2.Compose(ops)


def eval_transform(size: tuple[int, int], mean, std, *, resize: int | None, interpolation: str = "bilinear") -> v2.Compose:
    """Resize the shorter side to `resize` and center-crop `size`; with resize=None squash to `size`."""
    interp = v2.InterpolationMode(interpolation)
    first = [v2.Resize(resize, interpolation=interp, antialias=True), v2.CenterCrop(size)] if resize else \
        [v2.Resize(size, interpolation=interp, antialias=True)]
    return v2.Compose([*first, v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])


class FileDataset(Dataset):
    """(image tensor, label) from image files; an unreadable file is reported once and replaced by the next."""

    def __init__(self, paths: list[str], labels: torch.Tensor, transform, channels: int):
        self.paths, self.labels, self.transform, self.channels = paths, labels, transform, channels
        self._reported: set[int] = set()

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        for k in range(len(self.paths)):
            j = (i + k) % len(self.paths)
            try:
                img = open_image(self.paths[j], self.channels)
            except ImgclsError as e:
                if j not in self._reported:
                    self._reported.add(j)
                    warnings.warn(f"skipped {e}", stacklevel=2)
                continue
            return self.transform(img), int(self.labels[j])
        raise ImgclsError(f"no readable image among {len(self.paths)} files, e.g. {self.paths[0]}")


class StoredDataset(Dataset):
    """(image tensor, label) from photos decoded once (`imgcls.data.store.Stored`): the transforms run on uint8 tensors."""

    def __init__(self, stored, labels: torch.Tensor, transform):
        self.stored, self.labels, self.transform = stored, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.transform(self.stored.image(i)), int(self.labels[i])


class FileLoader:
    """A DataLoader remade every epoch with a generator seeded by (seed, epoch), for exact resumption."""

    def __init__(self, dataset: FileDataset | StoredDataset, *, batch_size: int, shuffle: bool, drop_last: bool = False,
                 workers: int = 2, seed: int = 0, pin_memory: bool = False, sample_weights: torch.Tensor | None = None,
                 rank: int = 0, world: int = 1, collate_fn=None):
        self.collate_fn = collate_fn  # None: stack tensors (a task's targets of varying size: its own, e.g. lists)
        self.dataset, self.batch_size, self.shuffle, self.drop_last = dataset, batch_size, shuffle, drop_last
        self.sample_weights = sample_weights  # balanced sampling: draws with replacement instead of shuffling
        self.workers, self.seed, self.epoch, self.pin_memory = workers, seed, 0, pin_memory
        # Multi-process training: as TensorLoader, a rank's slice of every global batch (training) or a
        # contiguous block (evaluation).
        self.rank, self.world = rank, world
        if world > 1 and shuffle:
            if batch_size % world:
                raise ValueError(f"the batch size {batch_size} must be a multiple of the {world} processes")
            self.drop_last = True

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _block(self) -> range:
        n = len(self.dataset)
        return range(self.rank * n // self.world, (self.rank + 1) * n // self.world)

    def __len__(self) -> int:
        n = len(self.dataset) if self.world == 1 or self.shuffle else len(self._block())
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _sharded_batches(self, g: torch.Generator) -> list[list[int]]:
        n = len(self.dataset)
        if not self.shuffle:
            block = list(self._block())
            return [block[i:i + self.batch_size] for i in range(0, len(block), self.batch_size)]
        order = epoch_order(n, g, shuffle=True, weights=self.sample_weights).tolist()
        return [order[rank_slice(i, self.batch_size, self.rank, self.world)] for i in range(len(self))]

    def __iter__(self):
        g = epoch_generator(self.seed, self.epoch)
        if self.world > 1:  # the order is shared; workers' augmentation seeds are each process's own
            g_rank = epoch_generator(self.seed, self.epoch, self.rank)
            yield from DataLoader(self.dataset, batch_sampler=self._sharded_batches(g), num_workers=self.workers,
                                  pin_memory=self.pin_memory, generator=g_rank, collate_fn=self.collate_fn)
            return
        sampler = WeightedRandomSampler(self.sample_weights.double(), len(self.dataset), replacement=True, generator=g) \
            if self.sample_weights is not None else None
        loader = DataLoader(self.dataset, batch_size=self.batch_size, shuffle=self.shuffle and sampler is None,
                            sampler=sampler, drop_last=self.drop_last, num_workers=self.workers, generator=g,
                            pin_memory=self.pin_memory, collate_fn=self.collate_fn)
        yield from loader
