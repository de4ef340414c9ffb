"""Caltech101 (Fei-Fei et al. 2004) as a map-style data set over its original archive layout.

    ROOT/101_ObjectCategories/<class>/image_NNNN.jpg     (or ROOT/caltech101/101_ObjectCategories/...,
                                                         where torchvision's download puts it, or
                                                         ROOT/<any folder>/101_ObjectCategories/...)

Images vary in size (up to ~300 px a side) and some are grayscale: `_load_image` always returns
RGB. `BACKGROUND_Google` (clutter, not an object class) is left out unless asked for, as
torchvision does (which keeps both `Faces` and `Faces_easy`, crops of the same photos: 101
classes). There is no official split: `split()` makes a seeded stratified train/val/test split
(the same one `data=caltech101` makes), which `imgcls train` saves in the run folder.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import v2

from imgcls.data.image_io import is_image_file, open_image
from imgcls.errors import ImgclsError

ARCHIVE_DIR = "101_ObjectCategories"
BACKGROUND = "BACKGROUND_Google"


def find_categories_dir(root: str | Path) -> Path | None:
    """ROOT/101_ObjectCategories, ROOT/caltech101/... (torchvision's place), else ROOT/<any folder>/101_ObjectCategories."""
    root = Path(root)
    for d in (root / ARCHIVE_DIR, root / "caltech101" / ARCHIVE_DIR, root if root.name == ARCHIVE_DIR else None):
        if d is not None and d.is_dir():
            return d
    found = sorted(root.glob(f"*/{ARCHIVE_DIR}")) if root.is_dir() else []
    return found[0] if found else None


class Caltech101(Dataset):
    """(image tensor, class index) pairs from the Caltech101 archive layout under `root`.

    Args:
        root: folder holding `101_ObjectCategories/` (or `caltech101/101_ObjectCategories/`).
        transform: applied to the PIL image; default: a float tensor in [0, 1], (3, H, W).
        include_background: keep the `BACKGROUND_Google` clutter folder as a class.
        download: fetch the archive with torchvision when it is not under `root` (needs network).
    """

    def __init__(self, root: str | Path, *, transform: Callable | None = None, include_background: bool = False,
                 download: bool = False):
        self.root = Path(root)
        found = find_categories_dir(self.root)
        if found is None and download:
            found = self._download()
        if found is None:
            raise ImgclsError(
                f"Caltech101 not found under {self.root}: expected {self.root}/{ARCHIVE_DIR}/<class>/image_NNNN.jpg. "
                f"Download caltech-101.zip from https://data.caltech.edu/records/mzrjq-6wc02 and extract "
                f"101_ObjectCategories.tar.gz into {self.root}/ (or run with data.download=true online)")
        self.categories_dir = found
        names = sorted(p.name for p in found.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not include_background:
            names = [n for n in names if n != BACKGROUND]
        self.classes: list[str] = names
        self.samples: list[str] = []
        self.targets: list[int] = []
        for i, c in enumerate(names):
            files = sorted(str(p) for p in (found / c).iterdir() if p.is_file() and is_image_file(p))
            self.samples += files
            self.targets += [i] * len(files)
        if not self.samples:
            raise ImgclsError(f"no images in {found}/<class>/ (expected image_NNNN.jpg files)")
        self.transform = transform or v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])

    def _download(self) -> Path | None:
        from torchvision.datasets import Caltech101 as TVCaltech101

        try:
            TVCaltech101(str(self.root), download=True)
        except Exception as e:  # network errors come in many types
            raise ImgclsError(f"Caltech101 is not under {self.root} and could not be downloaded ({type(e).__name__}). "
                              f"Download caltech-101.zip from https://data.caltech.edu/records/mzrjq-6wc02 and extract "
                              f"101_ObjectCategories.tar.gz into {self.root}/") from None
        return find_categories_dir(self.root)

    def __len__(self) -> int:
        return len(self.samples)

    def _load_image(self, i: int) -> Image.Image:
        return open_image(self.samples[i], 3)  # grayscale and CMYK files come back as RGB

    def _load_label(self, i: int) -> int:
        return self.targets[i]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(self._load_image(i)), self._load_label(i)

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.targets, minlength=len(self.classes))
        return {c: int(n) for c, n in zip(self.classes, counts)}

    def split(self, val_fraction: float = 0.1, test_fraction: float = 0.2, seed: int = 0) -> dict[str, np.ndarray]:
        """Seeded stratified split into {"train", "val", "test"} index arrays (each class in the same proportions)."""
        from imgcls.data.split import stratified_split

        y = torch.tensor(self.targets)
        out = {"train": np.arange(len(self))}
        if test_fraction > 0:
            rest, test = stratified_split(y, test_fraction, seed)
            out = {"train": rest, "test": test}
        if val_fraction > 0:
            rest = out["train"]
            tr, va = stratified_split(y[rest], val_fraction / (1 - test_fraction), seed)  # a share of what is left
            out["train"], out["val"] = rest[tr], rest[va]
        return {k: np.sort(v) for k, v in out.items()}
