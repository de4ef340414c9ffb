"""From a `DataConfig` to a ready `DataBundle`: source, channel and size conversion, limits, val split."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from imgcls.config import DataConfig
from imgcls.data.bundle import DataBundle, Split
from imgcls.data.sources import data_root, get_source
from imgcls.data.split import stratified_split
from imgcls.data.store import build_store
from imgcls.errors import ImgclsError


def _convert_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """uint8 (N, C, H, W) to `channels`: gray repeated to RGB, or RGB to ITU-R 601 luma (PIL's "L")."""
    c = images.shape[1]
    if c == channels:
        return images
    if c == 1 and channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    if c == 3 and channels == 1:
        w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        return (images.float() * w).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    raise ImgclsError(f"cannot convert {c}-channel images to {channels} channels")


MAX_IN_MEMORY_BYTES = 8 * 2**30  # a split decoded into memory larger than this is refused with advice


def _resize(images: torch.Tensor, size: tuple[int, int], chunk: int = 2048) -> torch.Tensor:
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    n, c = images.shape[:2]
    if n * c * size[0] * size[1] > MAX_IN_MEMORY_BYTES:
        raise ImgclsError(f"{n} images at {size[0]}x{size[1]} would take {n * c * size[0] * size[1] / 2**30:.0f} GB of "
                          f"memory; set a smaller data.image_size")
    out = torch.empty((n, c, *size), dtype=torch.uint8)
    for i in range(0, n, chunk):  # in chunks: the float copy of a whole data set would not fit
        part = F.interpolate(images[i:i + chunk].float(), size=size, mode="bilinear", antialias=True, align_corners=False)
        out[i:i + chunk] = part.round().clamp(0, 255).to(torch.uint8)
    return out


def _fit_stats(values: list[float], channels: int) -> list[float]:
    if len(values) == channels:
        return list(values)
    if channels == 1:
        return [float(np.mean(values))]
    if len(values) == 1:
        return list(values) * channels
    raise ImgclsError(f"normalization has {len(values)} values but the images have {channels} channels")


# DataConfig options given to the sources that take them (a task's formats: the class map of segmentation masks)
SOURCE_EXTRAS = ("merge", "rest", "ignore_index")


def load_data(cfg: DataConfig) -> DataBundle:
    """Load the data set `cfg` names and prepare it for training (see `DataConfig` for each option)."""
    if cfg.channels not in (None, 1, 3):
        raise ImgclsError(f"data.channels must be 1 or 3, got {cfg.channels}")
    if not 0 <= cfg.val_fraction < 1:
        raise ImgclsError(f"data.val_fraction must be in [0, 1), got {cfg.val_fraction}")
    if cfg.test_fraction is not None and not 0 <= cfg.test_fraction < 1:
        raise ImgclsError(f"data.test_fraction must be in [0, 1), got {cfg.test_fraction}")
    root = data_root(cfg.root)
    source = get_source(cfg.name)
    extra = {k: getattr(cfg, k) for k in SOURCE_EXTRAS if k in inspect.signature(source).parameters}
    b = source(root, channels=cfg.channels, image_size=cfg.image_size, small_max=cfg.small_max,
               cache_dir=cfg.cache_dir, workers=cfg.workers, download=cfg.download, **extra)
    channels = cfg.channels or b.channels
    size = (cfg.image_size, cfg.image_size) if cfg.image_size else b.image_size
    splits: dict[str, Split | None] = {}
    for name in ("train", "val", "test"):
        s: Split | None = getattr(b, name)
        if s is not None and cfg.limit and cfg.limit < len(s):
            # A seeded random subset: files come sorted by class, so "the first N" could be a single class.
            keep = torch.randperm(len(s), generator=torch.Generator().manual_seed(cfg.split_seed))[: cfg.limit]
            s = s.subset(keep.sort().values)
        if s is not None and s.images is not None:
            s = Split(labels=s.labels, ids=s.ids, images=_resize(_convert_channels(s.images, channels), size), targets=s.targets)
        splits[name] = s
    test_fraction = cfg.test_fraction if cfg.test_fraction is not None else b.default_test_fraction
    val_fraction = cfg.val_fraction
    if splits["test"] is None and test_fraction > 0:  # no official test split (Caltech101): hold one out, stratified
        tr, te = stratified_split(splits["train"].labels, test_fraction, cfg.split_seed)
        splits["test"], splits["train"] = splits["train"].subset(te), splits["train"].subset(tr)
        val_fraction = val_fraction / (1 - test_fraction)  # still a share of the whole: 70/10/20, as Caltech101.split
    if splits["val"] is None and val_fraction > 0:
        tr, va = stratified_split(splits["train"].labels, val_fraction, cfg.split_seed)
        splits["val"], splits["train"] = splits["train"].subset(va), splits["train"].subset(tr)
    mean = _fit_stats(cfg.mean or b.mean, channels)
    std = _fit_stats(cfg.std or b.std, channels)
    return DataBundle(name=b.name, classes=b.classes, channels=channels, image_size=size, mean=mean, std=std,
                      resize=b.resize, notes=b.notes, flip_ok=b.flip_ok, task=b.task, ignore_index=b.ignore_index,
                      loader=b.loader, check_targets=b.check_targets, **splits)


def store_photos(bundle: DataBundle, *, cache_dir: str | Path, workers: int = 2, progress: bool | None = None
                 ) -> tuple[DataBundle, list[str]]:
    """`bundle` with every photo split decoded once into a store at the evaluation resize (`bundle.resize`).

    Returns (the bundle, notes on unreadable files). Splits already in memory (small images) are left as they are.
    """
    side = bundle.resize or round(max(bundle.image_size) / 0.875)
    splits, notes = {}, []
    for name in ("train", "val", "test"):
        s: Split | None = getattr(bundle, name)
        if s is None or s.images is not None or s.stored is not None or not len(s):
            continue
        stored, errors = build_store(s.ids, (side, side), bundle.channels, fit="crop", cache_dir=cache_dir,
                                     workers=workers, progress=progress, desc=f"decoding {name} photos at {side} px")
        splits[name] = Split(labels=s.labels, ids=s.ids, stored=stored)
        notes += [f"skipped {e}" for e in errors]
    return bundle.with_splits(**splits), notes


def write_split_lists(bundle: DataBundle, folder: str | Path) -> None:
    """Save which samples went to which split, one "<id>\t<label>" per line, so a run can be audited (detection: an
    image's most frequent class, "-" for an image without boxes)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    k = len(bundle.classes)
    for name in ("train", "val", "test"):
        s = getattr(bundle, name)
        if s is not None:
            lines = (f"{i}\t{bundle.classes[int(y)] if 0 <= y < k else '-'}\n" for i, y in zip(s.ids, s.labels.tolist()))
            (folder / f"{name}.txt").write_text("".join(lines))
