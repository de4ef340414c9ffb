"""Decode small image files once into a uint8 tensor cache keyed by a fingerprint of the file list.

A second run over the same files (same paths, sizes and modification times, same target size and
channels) loads one safetensors file in well under a second instead of decoding every image again.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from imgcls.atomic import atomic_path
from imgcls.data.image_io import open_image
from imgcls.errors import ImgclsError

CACHE_VERSION = 1  # bump when the decoding below changes


def default_cache_dir(cache_dir: str | None) -> Path:
    return Path(cache_dir or os.environ.get("IMGCLS_CACHE") or Path.home() / ".cache" / "imgcls")


def fingerprint(paths: list[str], size: tuple[int, int], channels: int) -> str:
    h = hashlib.sha1(json.dumps([CACHE_VERSION, list(size), channels]).encode())
    for p in paths:
        try:
            st = os.stat(p)
            sig = f"{st.st_size}\0{st.st_mtime_ns}"
        except OSError as e:  # a broken link or link loop: decoding will name it; it must not stop the fingerprint
            sig = f"error {e.errno}"
        h.update(f"{p}\0{sig}\n".encode())
    return h.hexdigest()[:20]


def _decode(args: tuple[str, tuple[int, int], int]) -> np.ndarray | str:
    path, (h, w), channels = args
    try:
        img = open_image(path, channels)
    except ImgclsError as e:
        return str(e)
    if img.size != (w, h):
        img = img.resize((w, h), Image.BILINEAR)
    arr = np.asarray(img, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)  # (C, H, W)


def decode_images(
    paths: list[str], size: tuple[int, int], channels: int, cache_dir: str | None = None, workers: int = 2
) -> tuple[torch.Tensor, list[int], list[str]]:
    """Decode `paths` to uint8 (N, C, H, W), resized to `size`, using the cache when it matches.

    Returns the images of the readable files, the indices of those files in `paths`, and one
    message per unreadable file (those are skipped, not fatal).
    """
    cache = default_cache_dir(cache_dir) / f"{fingerprint(paths, size, channels)}.safetensors"
    if cache.is_file():
        t = load_file(str(cache))
        keep = t["keep"].tolist()
        kept = set(keep)
        skipped = [p for i, p in enumerate(paths) if i not in kept]
        return t["images"], keep, [f"{p}: unreadable (cached result)" for p in skipped]
    jobs = [(p, size, channels) for p in paths]
    if workers > 1 and len(paths) > 2000:
        with ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(_decode, jobs, chunksize=512))
    else:
        results = [_decode(j) for j in jobs]
    keep = [i for i, r in enumerate(results) if not isinstance(r, str)]
    errors = [r for r in results if isinstance(r, str)]
    if keep:
        # contiguous (N, C, H, W), as a cache hit returns it: the memory format decides which conv kernels run,
        # so a first (decoding) run and later (cached) runs would differ in the last bits
        images = torch.from_numpy(np.stack([results[i] for i in keep])).contiguous()
    else:
        images = torch.zeros((0, channels, *size), dtype=torch.uint8)
    with atomic_path(cache) as tmp:  # a killed run never leaves a half-written cache
        save_file({"images": images.contiguous(), "keep": torch.tensor(keep, dtype=torch.long)}, str(tmp))
    return images, keep, errors
