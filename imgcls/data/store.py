"""Photos decoded once: each file decoded and resized a single time into a uint8 array on disk, read memory-mapped.

Training on photo files decodes every JPEG in every epoch, mostly at several times the size the
model sees. A store decodes each file once (JPEG's draft mode decodes at 1/2, 1/4 or 1/8 scale when
that is still large enough), scales its shorter side to `side` (the evaluation resize, a bit above
the training size), keeps the center square, and writes it into a (N, C, side, side) uint8 `.npy`
file chunk by chunk from parallel worker processes, with a progress bar. Epochs then crop and flip
uint8 tensors read from the memory-mapped file: memory stays bounded by what the loader touches,
however many photos there are.

A store is named by a fingerprint of its files (paths, sizes, modification times), side and
channels, so a second run over the same photos starts at once; a `.json` beside it lists the files
that could not be read. Like fastai's presizing, random crops come from the center square.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from imgcls.atomic import atomic_path, write_text_atomic
from imgcls.data.image_io import check_regular_file, decode_image
from imgcls.errors import ImgclsError
from imgcls.progress import progress_bar

STORE_VERSION = 1  # bump when the decoding below changes
PARALLEL_FROM = 1000  # files; fewer are decoded in this process (a pool's start-up would cost more than it saves)
CHUNK = 32  # files per task sent to a worker process


def fingerprint(paths: list[str], key: list) -> str:
    """A name for the store of `paths` decoded with `key` (size, channels, fit): changes when any file does."""
    h = hashlib.sha1(json.dumps([STORE_VERSION, *key]).encode())
    for p in paths:
        try:
            st = os.stat(p)
            sig = f"{st.st_size}\0{st.st_mtime_ns}"
        except OSError as e:  # a broken link or link loop: decoding will name it; it must not stop the fingerprint
            sig = f"error {e.errno}"
        h.update(f"{p}\0{sig}\n".encode())
    return h.hexdigest()[:20]


def decode_fitted(path: str, size: tuple[int, int], channels: int, fit: str) -> np.ndarray:
    """One file as uint8 (C, H, W) of `size`: "squash" resizes to it, "crop" scales the shorter side and center-crops.

    Raises `ImgclsError` naming the file when it cannot be read.
    """
    h, w = size
    check_regular_file(path)
    img = decode_image(path, path, channels=channels, draft=(w, h))
    if fit == "crop" and img.size != (w, h):
        scale = max(w / img.width, h / img.height)
        rw, rh = max(w, round(img.width * scale)), max(h, round(img.height * scale))
        img = img.resize((rw, rh), Image.BILINEAR, reducing_gap=3.0)
        left, top = (rw - w) // 2, (rh - h) // 2
        img = img.crop((left, top, left + w, top + h))
    elif img.size != (w, h):
        img = img.resize((w, h), Image.BILINEAR)
    arr = np.asarray(img, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def _decode_chunk(args: tuple[list[str], tuple[int, int], int, str]) -> list[np.ndarray | str]:
    paths, size, channels, fit = args
    out: list[np.ndarray | str] = []
    for p in paths:
        try:
            out.append(decode_fitted(p, size, channels, fit))
        except ImgclsError as e:
            out.append(str(e))
    return out


def _decoded(paths: list[str], size, channels: int, fit: str, workers: int) -> Iterator[np.ndarray | str]:
    """Each file's array (or error message), in order; decoded by `workers` processes when there are many."""
    chunks = [(paths[i:i + CHUNK], size, channels, fit) for i in range(0, len(paths), CHUNK)]
    if workers > 1 and len(paths) >= PARALLEL_FROM:
        with ProcessPoolExecutor(workers) as pool:
            for part in pool.map(_decode_chunk, chunks):
                yield from part
    else:
        for c in chunks:
            yield from _decode_chunk(c)


@dataclass
class Stored:
    """Decoded images in a (R, C, H, W) uint8 array (memory-mapped) and each sample's row (-1: unreadable)."""

    array: np.ndarray
    rows: np.ndarray  # (N,) int64

    def __len__(self) -> int:
        return len(self.rows)

    def take(self, index) -> Stored:
        return Stored(self.array, self.rows[np.asarray(index, dtype=np.int64)])

    def image(self, i: int) -> torch.Tensor:
        """Sample i as a uint8 (C, H, W) tensor; an unreadable sample gives the next readable one (as FileDataset)."""
        n = len(self.rows)
        for k in range(n):
            r = self.rows[(i + k) % n]
            if r >= 0:
                return torch.from_numpy(np.array(self.array[r]))
        raise ImgclsError(f"none of the {n} stored images could be read")


def build_store(paths: list[str], size: tuple[int, int], channels: int, *, fit: str = "crop",
                cache_dir: str | os.PathLike, workers: int = 2, progress: bool | None = None,
                desc: str = "decoding") -> tuple[Stored, list[str]]:
    """Decode `paths` once into the store (or open the one already there); (stored images, error messages)."""
    folder = Path(cache_dir)
    name = fingerprint(paths, [list(size), channels, fit])
    npy, meta = folder / f"{name}.npy", folder / f"{name}.json"
    if npy.is_file() and meta.is_file():
        info = json.loads(meta.read_text())
        return Stored(np.load(npy, mmap_mode="r"), np.asarray(info["rows"], dtype=np.int64)), info["errors"]
    if not paths:
        return Stored(np.zeros((0, channels, *size), np.uint8), np.zeros(0, np.int64)), []
    try:
        return _build(paths, size, channels, fit, npy, meta, workers, progress, desc)
    except OSError as e:  # a full disk, a read-only folder: say where, and how to put the cache elsewhere
        raise ImgclsError(f"cannot write the decoded images to {folder} ({e.strerror or e}); free space there or set "
                          f"data.cache_dir=DIR (or $IMGCLS_CACHE) to another folder") from None


def _build(paths: list[str], size: tuple[int, int], channels: int, fit: str, npy: Path, meta: Path, workers: int,
           progress: bool | None, desc: str) -> tuple[Stored, list[str]]:
    npy.parent.mkdir(parents=True, exist_ok=True)
    rows = np.full(len(paths), -1, dtype=np.int64)
    errors: list[str] = []
    with atomic_path(npy) as tmp:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(paths), channels, *size))
        # a bar (on a terminal, see imgcls.progress) for sets big enough to wait for
        bar = progress_bar(desc=desc, total=len(paths), unit="img", progress=progress if len(paths) >= PARALLEL_FROM else False)
        r = 0
        for i, result in enumerate(_decoded(paths, size, channels, fit, workers)):
            if isinstance(result, str):
                errors.append(result)
            else:  # readable files fill the rows in order; the unreadable leave none
                array[r] = result
                rows[i] = r
                r += 1
            bar.update()
        bar.close()
        array.flush()
        del array
    write_text_atomic(meta, json.dumps({"rows": rows.tolist(), "errors": errors, "size": list(size), "fit": fit,
                                        "channels": channels}))
    return Stored(np.load(npy, mmap_mode="r"), rows), errors

