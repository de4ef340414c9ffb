"""The real Caltech101 subset from $IMGCLS_DATA: the class reads every file, the source splits it stratified."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from imgcls.config import DataConfig
from imgcls.data import load_data
from imgcls.data.caltech101 import Caltech101, find_categories_dir

pytestmark = pytest.mark.integration

SUBSET = ["accordion", "butterfly", "camera", "dalmatian", "grand_piano", "kangaroo", "laptop", "pizza", "revolver",
          "sunflower", "watch", "yin_yang"]


@pytest.fixture
def caltech_root(data_root):
    if find_categories_dir(data_root) is None:
        pytest.skip(f"no 101_ObjectCategories under {data_root}")
    return data_root


def test_subset_reads_whole_with_grayscale_files_as_rgb(caltech_root):
    ds = Caltech101(caltech_root)
    if ds.classes != SUBSET:
        pytest.skip(f"not the 12-class subset this test knows: {ds.classes[:4]}...")
    assert len(ds) == 1048
    counts = ds.class_counts()
    assert min(counts.values()) == 50 and max(counts.values()) == 239 and counts["watch"] == 239
    gray = [i for i, p in enumerate(ds.samples) if Image.open(p).mode == "L"]
    assert len(gray) == 48
    assert ds._load_image(gray[0]).mode == "RGB" and ds[gray[0]][0].shape[0] == 3


def test_source_split_is_stratified(caltech_root, real_data_cache):
    b = load_data(DataConfig(name="caltech101", root=str(caltech_root), image_size=16, cache_dir=real_data_cache))
    n = len(b.train) + len(b.val) + len(b.test)
    assert n == len(Caltech101(caltech_root)) and abs(len(b.test) - 0.2 * n) <= len(b.classes)
    share = np.bincount(b.test.labels.numpy()) / np.bincount(np.concatenate(
        [b.train.labels.numpy(), b.val.labels.numpy(), b.test.labels.numpy()]))
    assert np.all(np.abs(share - 0.2) < 0.03)  # every class held out in the same proportion
    assert b.train.images.shape[1:] == (3, 16, 16)
