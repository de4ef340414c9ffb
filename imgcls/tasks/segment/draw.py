"""Masks as pictures: palette PNGs that keep the class indices, and overlays of a mask on its photo."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def palette(n: int) -> np.ndarray:
    """(n, 3) uint8 colours: class 0 (usually the background) black, the others from matplotlib's tab20 / hsv."""
    from matplotlib import colormaps

    cmap = colormaps["tab20"] if n <= 21 else colormaps["hsv"]
    cols = [(0, 0, 0)] + [tuple(int(255 * c) for c in cmap((i % 20) / 20 if n <= 21 else i / max(n - 1, 1))[:3])
                          for i in range(n - 1)]
    return np.array(cols, dtype=np.uint8)


def save_mask(mask: np.ndarray, path, num_classes: int):
    """A palette PNG (a path or a binary file): its pixel values are the class indices (read back as they are),
    shown in colour."""
    im = Image.fromarray(mask.astype(np.uint8))  # "L"; putpalette makes it "P" with the same values
    pal = palette(max(num_classes, 1))
    im.putpalette(pal.ravel().tolist() + [0] * (768 - pal.size))
    im.save(path, format="PNG")
    return Path(path) if isinstance(path, (str, Path)) else path


def overlay(image: Image.Image, mask: np.ndarray, num_classes: int, alpha: float = 0.5) -> Image.Image:
    """The photo with each class's pixels tinted in its colour (the first class, the background, left as it is)."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    colours = palette(max(num_classes, 1))[mask].astype(np.float32)
    tint = (mask > 0)[..., None]
    out = np.where(tint, (1 - alpha) * rgb + alpha * colours, rgb)
    return Image.fromarray(out.round().clip(0, 255).astype(np.uint8))
