"""Data: the folder source, splits, the decode cache, channel conversion, file loading, TensorLoader."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest
import torch
from PIL import Image

import imgcls.data.store as store_mod
from imgcls.config import AugConfig, DataConfig
from imgcls.data import load_data, make_loader, write_split_lists
from imgcls.data.file_loader import FileLoader
from imgcls.data.sources import IMAGENET_MEAN, IMAGENET_STD
from imgcls.data.tensor_loader import TensorLoader, random_flip, random_translate
from imgcls.errors import ImgclsError
from tests.conftest import COLORS, SORTED_CLASSES


def folder_cfg(root: Path, **kw) -> DataConfig:
    return DataConfig(name="folder", root=str(root), **kw)


def dominant_channel(images: torch.Tensor) -> torch.Tensor:
    """Index of the brightest channel of each image, (N, 3, H, W) -> (N,)."""
    return images.float().mean(dim=(2, 3)).argmax(1)


# Sorted classes are blue, green, red: the dominant RGB channel of class i.
EXPECTED_CHANNEL = torch.tensor([int(torch.tensor(COLORS[c]).argmax()) for c in SORTED_CLASSES])


def test_folder_classes_sorted_and_in_memory(image_folder):
    root = image_folder()
    b = load_data(folder_cfg(root, val_fraction=0))
    assert b.classes == ["blue", "green", "red"]
    assert b.in_memory and b.channels == 3 and b.image_size == (16, 16) and b.resize is None
    assert b.mean == IMAGENET_MEAN and b.std == IMAGENET_STD
    assert b.val is None
    assert b.train.images.dtype == torch.uint8 and b.train.images.shape == (36, 3, 16, 16)
    assert b.test.images.shape == (12, 3, 16, 16)
    assert Counter(b.train.labels.tolist()) == {0: 12, 1: 12, 2: 12}
    # Each label matches its folder: ids name the folder, and the pixels have the folder's colour.
    for split in (b.train, b.test):
        assert all(Path(i).parent.name == b.classes[y] for i, y in zip(split.ids, split.labels.tolist()))
        assert torch.equal(dominant_channel(split.images), EXPECTED_CHANNEL[split.labels])


def test_stratified_split(image_folder):
    root = image_folder()
    b = load_data(folder_cfg(root, val_fraction=0.25, split_seed=3))
    assert Counter(b.val.labels.tolist()) == {0: 3, 1: 3, 2: 3}
    assert Counter(b.train.labels.tolist()) == {0: 9, 1: 9, 2: 9}
    assert set(b.train.ids).isdisjoint(b.val.ids)
    assert len(set(b.train.ids) | set(b.val.ids)) == 36
    for split in (b.train, b.val):  # images stay with their labels and ids through the split
        assert torch.equal(dominant_channel(split.images), EXPECTED_CHANNEL[split.labels])
        assert all(Path(i).parent.name == b.classes[y] for i, y in zip(split.ids, split.labels.tolist()))

    again = load_data(folder_cfg(root, val_fraction=0.25, split_seed=3))
    assert again.val.ids == b.val.ids and again.train.ids == b.train.ids
    other = load_data(folder_cfg(root, val_fraction=0.25, split_seed=4))
    assert other.val.ids != b.val.ids
    assert Counter(other.val.labels.tolist()) == {0: 3, 1: 3, 2: 3}


def test_val_folder_is_used_instead_of_a_split(image_folder):
    root = image_folder(n_val=2)
    b = load_data(folder_cfg(root, val_fraction=0.25))
    assert len(b.train) == 36 and len(b.val) == 6 and len(b.test) == 12
    assert all("/val/" in i for i in b.val.ids)


def test_write_split_lists(image_folder, tmp_path):
    b = load_data(folder_cfg(image_folder(), val_fraction=0.25))
    write_split_lists(b, tmp_path / "splits")
    for name in ("train", "val", "test"):
        lines = (tmp_path / "splits" / f"{name}.txt").read_text().splitlines()
        split = getattr(b, name)
        assert [ln.split("\t")[0] for ln in lines] == split.ids
        assert all(Path(ln.split("\t")[0]).parent.name == ln.split("\t")[1] for ln in lines)


def test_second_load_hits_decode_cache(image_folder, monkeypatch, _isolated_cache):
    root = image_folder()
    calls = []
    real = store_mod.decode_fitted
    monkeypatch.setattr(store_mod, "decode_fitted", lambda *args: calls.append(args) or real(*args))
    first = load_data(folder_cfg(root, val_fraction=0))
    assert len(calls) == 48
    assert list(_isolated_cache.glob("*.npy"))  # written under $IMGCLS_CACHE

    def fail(*args):
        raise AssertionError(f"decoded {args[0]} again despite the cache")

    monkeypatch.setattr(store_mod, "decode_fitted", fail)
    second = load_data(folder_cfg(root, val_fraction=0))
    assert torch.equal(first.train.images, second.train.images)
    assert torch.equal(first.test.images, second.test.images)
    assert first.train.ids == second.train.ids

    # A changed file changes the fingerprint: the cache must not serve stale pixels.
    f = Path(first.train.ids[0])
    Image.new("RGB", (16, 16), (0, 0, 0)).save(f)
    os.utime(f, ns=(os.stat(f).st_atime_ns, os.stat(f).st_mtime_ns + 10**9))
    with pytest.raises(AssertionError, match="again despite the cache"):
        load_data(folder_cfg(root, val_fraction=0))


def test_explicit_cache_dir(image_folder, tmp_path, _isolated_cache):
    load_data(folder_cfg(image_folder(), val_fraction=0, cache_dir=str(tmp_path / "c")))
    assert len(list((tmp_path / "c").glob("*.npy"))) == 2  # train and test
    assert not list(_isolated_cache.iterdir())


def test_rgb_to_gray(image_folder):
    b = load_data(folder_cfg(image_folder(), val_fraction=0, channels=1))
    assert b.channels == 1 and b.train.images.shape == (36, 1, 16, 16)
    assert len(b.mean) == 1 and len(b.std) == 1
    # Luma of the colour classes: green (0.587) is brighter than red (0.299), red than blue (0.114).
    means = [b.train.images[b.train.labels == i].float().mean().item() for i in range(3)]
    assert means[0] < means[2] < means[1]


def test_gray_folder(image_folder):
    root = image_folder(gray=True)
    rgb = load_data(folder_cfg(root, val_fraction=0))  # folder default: RGB
    assert rgb.train.images.shape == (36, 3, 16, 16)
    assert torch.equal(rgb.train.images[:, 0], rgb.train.images[:, 1])
    assert torch.equal(rgb.train.images[:, 0], rgb.train.images[:, 2])
    gray = load_data(folder_cfg(root, val_fraction=0, channels=1))
    assert gray.train.images.shape == (36, 1, 16, 16)
    assert torch.equal(gray.train.images[:, 0], rgb.train.images[:, 0])


def test_image_size_resizes_small_images(image_folder):
    b = load_data(folder_cfg(image_folder(), val_fraction=0, image_size=8))
    assert b.image_size == (8, 8) and b.train.images.shape == (36, 3, 8, 8)
    assert torch.equal(dominant_channel(b.train.images), EXPECTED_CHANNEL[b.train.labels])


def test_limit(image_folder):
    b = load_data(folder_cfg(image_folder(), val_fraction=0, limit=5))
    assert len(b.train) == 5 and len(b.test) == 5


def test_large_images_use_the_file_path(image_folder):
    root = image_folder(size=80, n_train=4, n_test=2)
    b = load_data(folder_cfg(root, val_fraction=0, image_size=32, small_max=24))
    assert not b.in_memory and b.train.images is None and b.test.images is None
    assert b.image_size == (32, 32) and b.resize == round(32 / 0.875)
    assert len(b.train.ids) == 12 and all(Path(p).is_file() for p in b.train.ids)

    train = make_loader(b, b.train, train=True, batch_size=5, aug=AugConfig(), workers=0)
    assert isinstance(train, FileLoader) and len(train) in (2, 3)  # 3 unless the last partial batch is dropped
    batches = list(train)
    assert len(batches) == len(train)
    x, y = batches[0]
    assert x.dtype == torch.float32 and x.shape == (5, 3, 32, 32) and y.dtype == torch.int64
    assert torch.isfinite(x).all() and x.std() > 0.1
    seen = torch.cat([y for _, y in batches]).tolist()
    assert set(seen) <= {0, 1, 2} and all(n <= 4 for n in Counter(seen).values())  # a shuffle, not a resample

    test = make_loader(b, b.test, train=False, batch_size=6, workers=0)
    x, y = next(iter(test))
    assert x.shape == (6, 3, 32, 32)
    assert y.tolist() == b.test.labels.tolist()  # eval order is file order
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    pixels = x * std + mean  # undo the normalization: back to [0, 1]
    assert pixels.min() > -0.01 and pixels.max() < 1.01
    expected = torch.tensor([COLORS[c] for c in SORTED_CLASSES], dtype=torch.float32)[y] / 255
    assert torch.allclose(pixels.mean(dim=(2, 3)), expected, atol=0.05)


def test_missing_folder(tmp_path):
    with pytest.raises(ImgclsError, match="not found"):
        load_data(folder_cfg(tmp_path / "nowhere"))


@pytest.mark.parametrize("name, where", [("mnist", "MNIST/raw/"), ("cifar10", "cifar-10-batches-py")])
def test_missing_torchvision_data_set_says_what_to_download_and_where(tmp_path, name, where):
    # download=False stands in for "no network": the same one-line error, naming the file and the folder.
    with pytest.raises(ImgclsError, match="not found under") as e:
        load_data(DataConfig(name=name, root=str(tmp_path), download=False))
    msg = str(e.value)
    assert "Download" in msg and str(tmp_path / where) in msg and "\n" not in msg


def test_folder_without_class_folders(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(ImgclsError, match="no images"):
        load_data(folder_cfg(tmp_path / "d"))


def test_empty_class_folder(image_folder):
    root = image_folder()
    (root / "train" / "purple").mkdir()
    with pytest.raises(ImgclsError, match="purple"):
        load_data(folder_cfg(root))


def test_single_class(image_folder):
    root = image_folder(classes=("red",))
    with pytest.raises(ImgclsError, match="one class"):
        load_data(folder_cfg(root))


def test_test_class_not_in_train(image_folder):
    root = image_folder()
    (root / "test" / "purple").mkdir()
    Image.new("RGB", (16, 16)).save(root / "test" / "purple" / "x.png")
    with pytest.raises(ImgclsError, match="purple"):
        load_data(folder_cfg(root))


def test_bad_options():
    with pytest.raises(ImgclsError, match="channels"):
        load_data(DataConfig(name="folder", channels=2))
    with pytest.raises(ImgclsError, match="val_fraction"):
        load_data(DataConfig(name="folder", val_fraction=1.0))
    with pytest.raises(ImgclsError, match="unknown data set 'nope'"):
        load_data(DataConfig(name="nope"))


def test_corrupt_file_is_skipped_with_a_note(image_folder):
    root = image_folder()
    bad = root / "train" / "red" / "zzz_bad.png"
    bad.write_text("not a png at all")
    b = load_data(folder_cfg(root, val_fraction=0))
    assert len(b.train) == 36 and str(bad) not in b.train.ids
    assert any("zzz_bad.png" in n for n in b.notes)
    assert torch.equal(dominant_channel(b.train.images), EXPECTED_CHANNEL[b.train.labels])
    again = load_data(folder_cfg(root, val_fraction=0))  # from the cache: still skipped, still noted
    assert again.train.ids == b.train.ids and any("zzz_bad.png" in n for n in again.notes)


# ---------------------------------------------------------------- TensorLoader


def tensor_data(n: int = 20, c: int = 3, side: int = 8):
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, c, side, side), generator=g, dtype=torch.uint8), torch.arange(n)


def tensor_loader(**kw) -> TensorLoader:
    images, labels = tensor_data()
    args = dict(batch_size=8, mean=[0.5, 0.4, 0.3], std=[0.2, 0.25, 0.3], shuffle=True, flip=True, crop_pad=2, seed=1)
    return TensorLoader(images, labels, **{**args, **kw})


def batches(loader, epoch):
    loader.set_epoch(epoch)
    return list(loader)


def test_tensor_loader_same_epoch_same_batches():
    a, b = batches(tensor_loader(), 3), batches(tensor_loader(), 3)
    assert len(a) == len(b) == 3
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_tensor_loader_epochs_and_seeds_differ():
    loader = tensor_loader()
    e0, e1 = batches(loader, 0), batches(loader, 1)
    assert not torch.equal(torch.cat([y for _, y in e0]), torch.cat([y for _, y in e1]))
    other_seed = batches(tensor_loader(seed=2), 0)
    assert not torch.equal(torch.cat([y for _, y in e0]), torch.cat([y for _, y in other_seed]))
    for epoch in (e0, e1):  # a shuffle is a permutation: every sample exactly once
        assert sorted(torch.cat([y for _, y in epoch]).tolist()) == list(range(20))


def test_tensor_loader_plain_order_and_normalization():
    images, labels = tensor_data()
    loader = TensorLoader(images, labels, batch_size=8, mean=[0.5, 0.4, 0.3], std=[0.2, 0.25, 0.3])
    out = list(loader)
    assert [len(y) for _, y in out] == [8, 8, 4]
    x = torch.cat([x for x, _ in out])
    assert x.dtype == torch.float32 and x.shape == (20, 3, 8, 8)
    assert torch.equal(torch.cat([y for _, y in out]), labels)
    mean = torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)
    std = torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1)
    torch.testing.assert_close(x, (images.float() / 255 - mean) / std)


def test_tensor_loader_len():
    assert len(tensor_loader()) == 3
    assert len(tensor_loader(drop_last=True)) == 2
    assert len(tensor_loader(batch_size=5, drop_last=True)) == 4 == len(tensor_loader(batch_size=5))
    dropped = list(tensor_loader(drop_last=True))
    assert len(dropped) == 2 and all(len(y) == 8 for _, y in dropped)


def test_make_loader_picks_tensor_loader(image_folder):
    b = load_data(folder_cfg(image_folder(), val_fraction=0))
    train = make_loader(b, b.train, train=True, batch_size=8, aug=AugConfig(flip=False, crop_pad=0))
    test = make_loader(b, b.test, train=False, batch_size=8)
    assert isinstance(train, TensorLoader) and train.shuffle and not train.flip and not train.crop_pad
    assert isinstance(test, TensorLoader) and not test.shuffle and not test.flip and not test.crop_pad
    x, y = next(iter(train))
    assert x.shape == (8, 3, 16, 16) and x.dtype == torch.float32


def test_random_flip():
    x = torch.randn(64, 2, 4, 5)
    once = random_flip(x, torch.Generator().manual_seed(7))
    assert once.shape == x.shape
    flipped = [torch.equal(o, xi.flip(2)) for o, xi in zip(once, x)]
    kept = [torch.equal(o, xi) for o, xi in zip(once, x)]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 10 < sum(flipped) < 54  # about half
    twice = random_flip(once, torch.Generator().manual_seed(7))  # same mask again: flip of flip
    assert torch.equal(twice, x)


def test_random_translate():
    x = torch.randn(16, 3, 6, 7)
    pad = 2
    out = random_translate(x, pad, torch.Generator().manual_seed(3))
    assert out.shape == x.shape
    xp = torch.nn.functional.pad(x, (pad, pad, pad, pad), mode="reflect")
    offsets = set()
    for b in range(len(x)):  # each image is some crop of its own reflect-padded version
        hits = [(dy, dx) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
                if torch.equal(out[b], xp[b, :, dy:dy + 6, dx:dx + 7])]
        assert hits, f"image {b} is not a shifted crop"
        offsets.add(hits[0])
    assert len(offsets) > 1  # offsets vary across the batch
    assert torch.equal(random_translate(x, 0, torch.Generator()), x)


def test_decoded_and_cached_images_have_the_same_memory_format(image_folder):
    """A first run (decoding) and a later one (cache hit) must feed the model the same tensors, strides included."""
    root = image_folder(n_train=6, n_test=2, size=10)
    a = load_data(folder_cfg(root, val_fraction=0))
    b = load_data(folder_cfg(root, val_fraction=0))
    assert torch.equal(a.train.images, b.train.images)
    assert a.train.images.is_contiguous() and b.train.images.is_contiguous()
    assert a.train.images.stride() == b.train.images.stride()
