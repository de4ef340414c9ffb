"""Pick the loader for a split: tensor-resident for small images, file-based for large ones."""

from __future__ import annotations

import torch

from imgcls.config import AugConfig
from imgcls.data.augment import photo_ops, policy_transform, tensor_batch_ops
from imgcls.data.bundle import DataBundle, Split
from imgcls.data.file_loader import FileDataset, FileLoader, StoredDataset, eval_transform, train_transform
from imgcls.data.tensor_loader import TensorLoader
from imgcls.errors import ImgclsError


def make_loader(bundle: DataBundle, split: Split, *, train: bool, batch_size: int, aug: AugConfig | None = None,
                seed: int = 0, device: str | torch.device = "cpu", channels_last: bool = False, workers: int = 2,
                balanced: bool = False, rank: int = 0, world: int = 1):
    """A loader of normalized float batches; `train=True` shuffles and augments, else neither.

    `balanced=True` (training only) draws every class equally often (with replacement) instead of shuffling.
    With `world` > 1 processes, each gets its share (`rank`): a slice of every training batch, a block of
    the evaluation data.
    """
    if bundle.loader is not None:  # a task's own targets (masks): its data source gave the loader
        return bundle.loader(bundle, split, train=train, batch_size=batch_size, aug=aug or AugConfig(), seed=seed,
                             device=device, workers=workers, rank=rank, world=world)
    aug = aug or AugConfig()
    flip = train and (aug.flip if aug.flip is not None else bundle.flip_ok)
    drop_last = train and len(split) > batch_size  # no tiny last batch for batch norm
    weights = balanced_sample_weights(split.labels) if train and balanced else None
    small = split.images is not None
    policy = policy_transform(aug.policy, small=small) if train else None
    if small:
        return TensorLoader(split.images, split.labels, batch_size=batch_size, mean=bundle.mean, std=bundle.std,
                            shuffle=train, drop_last=drop_last, flip=flip, flip_mode=aug.flip_mode,
                            crop_pad=aug.crop_pad if train else 0, seed=seed, device=device, channels_last=channels_last,
                            sample_weights=weights, policy=policy, policy_group=aug.policy_group,
                            batch_ops=tensor_batch_ops(aug) if train else (), rank=rank, world=world)
    if train:
        tf = train_transform(bundle.image_size, bundle.mean, bundle.std, flip=flip, scale=aug.crop_scale,
                             policy=policy, after=photo_ops(aug, bundle.image_size))
    else:
        tf = eval_transform(bundle.image_size, bundle.mean, bundle.std, resize=bundle.resize)
    ds = StoredDataset(split.stored, split.labels, tf) if split.stored is not None else \
        FileDataset(split.ids, split.labels, tf, bundle.channels)
    if split.stored is not None:
        # Crops of decoded photos are cheap: made in this process they trained faster than with 2 loader
        # workers at 128, 160 and 224 px and need no worker memory (docs/photos.md); data.workers is for files.
        workers = 0
    return FileLoader(ds, batch_size=batch_size, shuffle=train, drop_last=drop_last, workers=workers, seed=seed,
                      pin_memory=torch.device(device).type == "cuda", sample_weights=weights, rank=rank, world=world)


def balanced_sample_weights(labels: torch.Tensor) -> torch.Tensor:
    """Per-sample draw weights 1 / (count of its class): every class is drawn equally often."""
    counts = torch.bincount(labels.cpu())
    return 1.0 / counts[labels.cpu()].double()


def split_loader(bundle: DataBundle, split: str, *, batch_size: int, device, workers: int):
    """(bundle.<split>, its evaluation loader) for a task's `evaluate`; a clear error when there is no such split."""
    data = getattr(bundle, split, None)
    if data is None or not len(data):
        raise ImgclsError(f"data set {bundle.name!r} has no {split!r} split; choose split=train|val|test")
    return data, make_loader(bundle, data, train=False, batch_size=batch_size, device=device, workers=workers)
