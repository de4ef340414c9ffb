"""Caltech101 over a generated archive tree (grayscale files included), torchvision data sets by name,
and large photos asked for at a small size."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from imgcls.config import DataConfig
from imgcls.data import load_data
from imgcls.data.caltech101 import Caltech101
from imgcls.errors import ImgclsError

CALTECH_COUNTS = {"accordion": 12, "yin_yang": 6, "BACKGROUND_Google": 5, "watch": 20}


def write_caltech(root: Path, counts=CALTECH_COUNTS, gray_every: int = 4) -> Path:
    """ROOT/101_ObjectCategories/<class>/image_NNNN.jpg of varying sizes; every `gray_every`-th file is grayscale."""
    rng = np.random.default_rng(0)
    for c, n in counts.items():
        d = root / "101_ObjectCategories" / c
        d.mkdir(parents=True)
        base = rng.integers(0, 255, 3)
        for k in range(1, n + 1):
            h, w = int(rng.integers(40, 90)), int(rng.integers(40, 90))
            arr = np.clip(base + rng.integers(-20, 21, (h, w, 3)), 0, 255).astype(np.uint8)
            img = Image.fromarray(arr, "RGB")
            if k % gray_every == 0:
                img = img.convert("L")
            img.save(d / f"image_{k:04d}.jpg")
    return root


def test_caltech101_class_reads_the_archive_layout(tmp_path):
    root = write_caltech(tmp_path / "caltech")
    ds = Caltech101(root)
    assert ds.classes == ["accordion", "watch", "yin_yang"]  # BACKGROUND_Google left out by default
    assert len(ds) == 12 + 20 + 6
    assert ds.class_counts() == {"accordion": 12, "watch": 20, "yin_yang": 6}
    gray = next(i for i, p in enumerate(ds.samples) if Image.open(p).mode == "L")
    img = ds._load_image(gray)
    assert isinstance(img, Image.Image) and img.mode == "RGB"
    x, y = ds[gray]
    assert x.dtype == torch.float32 and x.shape[0] == 3 and 0 <= x.min() and x.max() <= 1
    assert y == ds._load_label(gray) == ds.targets[gray]
    assert ds.samples[gray].endswith(".jpg") and Path(ds.samples[gray]).parent.name == ds.classes[y]
    assert len(Caltech101(root, include_background=True).classes) == 4


def test_caltech101_split_is_stratified_and_seeded(tmp_path):
    ds = Caltech101(write_caltech(tmp_path / "c"))
    a, b, c = ds.split(0.2, 0.2, seed=0), ds.split(0.2, 0.2, seed=0), ds.split(0.2, 0.2, seed=1)
    assert all(np.array_equal(a[k], b[k]) for k in a) and not np.array_equal(a["test"], c["test"])
    together = np.concatenate([a["train"], a["val"], a["test"]])
    assert sorted(together.tolist()) == list(range(len(ds)))  # a partition
    y = np.asarray(ds.targets)
    per_class = np.bincount(y[a["test"]], minlength=3)
    assert all(abs(k - 0.2 * n) <= 1 for k, n in zip(per_class, np.bincount(y)))  # 20% of each class, up to rounding


def test_caltech101_source_holds_out_a_test_split_and_saves_it_with_the_run(tmp_path):
    from imgcls.training.run import train

    root = write_caltech(tmp_path / "c")
    b = load_data(DataConfig(name="caltech101", root=str(root), image_size=16, val_fraction=0.1))
    assert b.in_memory and b.train.images.shape[1:] == (3, 16, 16)
    assert len(b.train) + len(b.val) + len(b.test) == 38 and len(b.test) == 8
    r = train(data={"name": "caltech101", "root": str(root), "image_size": 16}, model={"name": "simple_cnn", "width": 4},
              trainer={"epochs": 1, "batch_size": 8, "progress": False, "threads": 1, "project": str(tmp_path / "runs")})
    saved = {s: (r.run_dir / "splits" / f"{s}.txt").read_text().splitlines() for s in ("train", "val", "test")}
    assert sum(len(v) for v in saved.values()) == 38
    assert all(line.split("\t")[0].endswith(".jpg") for line in saved["test"])
    assert r.metrics["split"] == "test"


def test_caltech101_missing_says_where_to_put_it(tmp_path):
    with pytest.raises(ImgclsError, match="101_ObjectCategories") as e:
        Caltech101(tmp_path)
    assert "Download" in str(e.value)


def write_idx(path: Path, arr: np.ndarray) -> None:
    dims = arr.shape
    magic = 0x0800 + len(dims)  # idx: unsigned bytes, then the number of dimensions
    with open(path, "wb") as f:
        f.write(struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims) + arr.tobytes())


def test_any_torchvision_data_set_by_name_offline(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 30), ("t10k", 10)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 255, (n, 28, 28)).astype(np.uint8))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", (np.arange(n) % 10).astype(np.uint8))
    b = load_data(DataConfig(name="FashionMNIST", root=str(tmp_path), download=False, val_fraction=0))
    assert b.channels == 1 and b.image_size == (28, 28) and len(b.train) == 30 and len(b.test) == 10
    assert b.classes[0] == "T-shirt/top" and b.test.labels.tolist() == [i % 10 for i in range(10)]
    assert not b.flip_ok
    assert load_data(DataConfig(name="fashionmnist", root=str(tmp_path), download=False, val_fraction=0)).name == "fashionmnist"


def test_unknown_data_set_name_lists_the_choices(tmp_path):
    with pytest.raises(ImgclsError, match="caltech101.*torchvision"):
        load_data(DataConfig(name="imagenet22k", root=str(tmp_path)))


def test_missing_torchvision_data_set_by_name_says_where(tmp_path):
    with pytest.raises(ImgclsError, match="KMNIST") as e:
        load_data(DataConfig(name="KMNIST", root=str(tmp_path), download=False))
    assert str(tmp_path) in str(e.value)


def test_large_photos_asked_for_at_a_small_size_are_decoded_once_into_memory(image_folder):
    root = image_folder(size=80, n_train=4, n_test=2)
    b = load_data(DataConfig(name="folder", root=str(root), val_fraction=0, image_size=24))
    assert b.in_memory and b.train.images.shape == (12, 3, 24, 24) and b.resize is None


def test_caltech101_source_and_class_make_the_same_split(tmp_path):
    root = write_caltech(tmp_path / "c")
    ds = Caltech101(root)
    idx = ds.split(val_fraction=0.1, test_fraction=0.2, seed=3)
    b = load_data(DataConfig(name="caltech101", root=str(root), image_size=8, val_fraction=0.1, split_seed=3))
    for split in ("train", "val", "test"):
        assert sorted(getattr(b, split).ids) == sorted(ds.samples[i] for i in idx[split]), split


def test_a_class_with_one_image_stays_in_train_and_the_rest_stays_stratified(image_folder):
    root = image_folder(n_train=10, n_test=0)
    lone = root / "train" / "purple"
    lone.mkdir()
    (root / "train" / "red" / "000.png").rename(lone / "only.png")
    with pytest.warns(UserWarning, match="too few images"):
        b = load_data(DataConfig(name="folder", root=str(root), val_fraction=0.2))
    purple = b.classes.index("purple")
    assert purple in b.train.labels.tolist() and purple not in b.val.labels.tolist()
    assert sorted(np.bincount(b.val.labels.numpy(), minlength=4).tolist()) == [0, 2, 2, 2]


def test_synthetic_source_has_cifar_shape_is_seeded_and_takes_size_and_limit(tmp_path):
    b = load_data(DataConfig(name="synthetic", root=str(tmp_path / "nothing_here"), val_fraction=0))
    assert (len(b.train), len(b.test), len(b.classes)) == (50_000, 10_000, 10)
    assert b.train.images.shape[1:] == (3, 32, 32) and b.train.images.dtype == torch.uint8
    again = load_data(DataConfig(name="synthetic", val_fraction=0))
    assert torch.equal(b.test.images[:100], again.test.images[:100])  # the same images every run
    small = load_data(DataConfig(name="synthetic", image_size=16, channels=1, limit=300, val_fraction=0.1))
    assert small.train.images.shape[1:] == (1, 16, 16) and len(small.test) == 300
    assert len(small.train) + len(small.val) == 300
