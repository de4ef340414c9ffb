"""Real data from $IMGCLS_DATA: MNIST trains to a known accuracy; CIFAR-10 image folders load whole.

Run with `IMGCLS_DATA=/path/to/data pytest -m integration`; without IMGCLS_DATA these tests skip.
"""

from __future__ import annotations

import pytest

from imgcls.config import DataConfig
from imgcls.data import load_data
from imgcls.evaluation import read_metrics
from imgcls.training.run import train

pytestmark = pytest.mark.integration

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def test_mnist_mlp_one_epoch(data_root, tmp_path):
    if not (data_root / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file():
        pytest.skip(f"MNIST not found under {data_root}/MNIST/raw")
    r = train(data={"name": "mnist", "root": str(data_root), "download": False}, model="mlp",
              aug={"flip": False, "crop_pad": 0}, optim={"lr": 0.05},
              trainer={"epochs": 1, "project": str(tmp_path), "progress": False, "threads": 1})
    assert r.metrics["split"] == "test" and r.metrics["num_samples"] == 10_000
    assert r.metrics["top1"] >= 0.95
    assert read_metrics(r.run_dir / "metrics.json")["top1"] == pytest.approx(r.metrics["top1"])
    assert len(r.history) == 1


def test_cifar10_image_folders(data_root, real_data_cache):
    if not (data_root / "cifar10" / "train").is_dir():
        pytest.skip(f"CIFAR-10 image folders not found under {data_root}/cifar10")
    b = load_data(DataConfig(name="cifar10", root=str(data_root), val_fraction=0, download=False,
                             cache_dir=real_data_cache))
    assert b.classes == CIFAR10_CLASSES == sorted(b.classes)
    assert b.in_memory and b.val is None and b.channels == 3 and b.image_size == (32, 32)
    assert b.train.images.shape == (50_000, 3, 32, 32) and b.test.images.shape == (10_000, 3, 32, 32)
    assert b.train.labels.bincount().tolist() == [5000] * 10
    assert b.test.labels.bincount().tolist() == [1000] * 10
    assert not b.notes  # no unreadable files
