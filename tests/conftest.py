"""Shared fixtures: an isolated decode cache, tiny generated image folders, the real-data root."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

# Class name -> base colour. The names are deliberately not in sorted order, so a test can tell that
# the folder source sorts them: sorted they are blue (0), green (1), red (2).
COLORS = {"red": (210, 40, 40), "green": (40, 200, 50), "blue": (40, 50, 210)}
GRAYS = {"red": 40, "green": 128, "blue": 215}  # grayscale: the classes differ by brightness
SORTED_CLASSES = sorted(COLORS)


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: on a small shared machine, two spinning OpenMP threads make tiny tensors 10x slower.

    `train(...)` and `evaluate(...)` set their own count (pass threads=1 there too); this restores it.
    """
    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)
    yield
    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own decode cache, so nothing is read from or written to ~/.cache."""
    cache = tmp_path_factory.mktemp("imgcls_cache")
    monkeypatch.setenv("IMGCLS_CACHE", str(cache))
    return cache


def _image(rng: np.random.Generator, cls: str, size: int, gray: bool) -> Image.Image:
    if gray:
        arr = GRAYS[cls] + rng.integers(-25, 26, size=(size, size))
        return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), mode="L")
    arr = np.array(COLORS[cls])[None, None, :] + rng.integers(-30, 31, size=(size, size, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), mode="RGB")


def write_image_folder(root: Path, *, n_train: int = 12, n_test: int = 4, n_val: int = 0, size: int = 16,
                       gray: bool = False, classes: tuple[str, ...] = ("red", "green", "blue"), seed: int = 0) -> Path:
    """ROOT/{train,test[,val]}/<class>/<k>.png with one distinct colour (or brightness) per class."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        if n <= 0:
            continue
        for cls in classes:
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for k in range(n):
                _image(rng, cls, size, gray).save(d / f"{k:03d}.png")
    return root


@pytest.fixture
def image_folder(tmp_path):
    """Factory: `image_folder(name="data", n_train=12, n_test=4, n_val=0, size=16, gray=False, classes=...)`.

    Returns the data root (pass it as `data.root` with `data.name="folder"`).
    """
    def make(name: str = "data", **kwargs) -> Path:
        return write_image_folder(tmp_path / name, **kwargs)

    return make


@pytest.fixture
def data_root() -> Path:
    root = os.environ.get("IMGCLS_DATA")
    if not root:
        pytest.skip("IMGCLS_DATA not set: real-data integration test skipped")
    return Path(root)


@pytest.fixture(scope="session")
def real_data_cache(tmp_path_factory) -> str:
    """One decode cache shared by the real-data tests (CIFAR-10 is decoded once, ~25 s).

    Under the caller's $IMGCLS_CACHE when set (CI sets one per clone): shared by the test processes of
    pytest-xdist too, as cache files are written atomically. Else a temporary folder of this session.
    """
    outer = os.environ.get("IMGCLS_CACHE")  # read before any test's isolated cache is set
    if outer:
        path = Path(outer) / "real-data-tests"
        path.mkdir(parents=True, exist_ok=True)
        return str(path)
    return str(tmp_path_factory.mktemp("real_data_cache"))
