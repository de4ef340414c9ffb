"""Decode small image files once into a uint8 tensor cache keyed by a fingerprint of the file list.

A second run over the same files (same paths, sizes and modification times, same target size and
channels) maps one `.npy` file in well under a second instead of decoding every image again (the
store format of `imgcls.data.store`, which photos use too).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from imgcls.data.store import build_store


def default_cache_dir(cache_dir: str | None) -> Path:
    return Path(cache_dir or os.environ.get("IMGCLS_CACHE") or Path.home() / ".cache" / "imgcls")


def decode_images(
    paths: list[str], size: tuple[int, int], channels: int, cache_dir: str | None = None, workers: int = 2,
    progress: bool | None = None,
) -> tuple[torch.Tensor, list[int], list[str]]:
    """Decode `paths` to uint8 (N, C, H, W), resized to `size`, using the cache when it matches.

    Returns the images of the readable files (memory-mapped from the cache file: pages are read as
    they are used, so a few hundred thousand images need no more memory than a batch), the indices
    of those files in `paths`, and one message per unreadable file (those are skipped, not fatal).
    Decoding runs in `workers` processes with a progress bar (on a terminal), written chunk by chunk.
    """
    stored, errors = build_store(paths, size, channels, fit="squash", cache_dir=default_cache_dir(cache_dir),
                                 workers=workers, progress=progress, desc="decoding images")
    keep = np.flatnonzero(stored.rows >= 0)
    # copy-on-write mapping: a writable tensor (torch wants one) whose pages stay the file's until written
    images = torch.from_numpy(np.load(stored.array.filename, mmap_mode="c")[: len(keep)])
    return images, keep.tolist(), errors
