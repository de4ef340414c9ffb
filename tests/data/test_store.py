"""Photos decoded once into an on-disk store (imgcls.data.store) and trained from it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import imgcls.data.store as store
from imgcls.data import make_loader
from imgcls.data.store import build_store, decode_fitted
from imgcls.setup import configs, setup


def stripes(path: Path, size=(400, 200)) -> Path:
    """Red | green | blue vertical thirds... the middle half green: x < w/4 red, w/4 <= x < 3w/4 green, else blue."""
    w, h = size
    a = np.zeros((h, w, 3), np.uint8)
    a[:, : w // 4, 0] = 255
    a[:, w // 4: 3 * w // 4, 1] = 255
    a[:, 3 * w // 4:, 2] = 255
    Image.fromarray(a).save(path, quality=95)
    return path


def noise_jpegs(folder: Path, n: int, size=(400, 300)) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = folder / f"{i}.jpg"
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(p, quality=80)
        paths.append(str(p))
    return paths


def test_a_photo_keeps_its_centre_square_at_the_side_asked(tmp_path):
    a = decode_fitted(str(stripes(tmp_path / "s.jpg")), (64, 64), 3, "crop")
    assert a.shape == (3, 64, 64) and a.dtype == np.uint8
    # the 200x200 centre of the 400x200 image is the green half: no red or blue survives the crop
    assert a[1].mean() > 240 and a[0].mean() < 15 and a[2].mean() < 15
    squashed = decode_fitted(str(stripes(tmp_path / "s.jpg")), (64, 64), 3, "squash")
    assert squashed[0, :, :8].mean() > 200  # squashing keeps the red quarter


def test_the_store_decodes_once_names_unreadable_files_and_follows_changes(tmp_path, monkeypatch):
    paths = noise_jpegs(tmp_path / "p", 5)
    (tmp_path / "p" / "bad.jpg").write_bytes(b"not a jpeg")
    paths.insert(2, str(tmp_path / "p" / "bad.jpg"))
    stored, errors = build_store(paths, (48, 48), 3, cache_dir=tmp_path / "c", workers=1, progress=False)
    assert stored.array.shape[1:] == (3, 48, 48) and isinstance(stored.array, np.memmap)
    assert stored.rows.tolist() == [0, 1, -1, 2, 3, 4]
    assert len(errors) == 1 and "bad.jpg" in errors[0]
    assert torch.equal(stored.image(2), stored.image(3))  # an unreadable sample gives the next readable one
    assert torch.equal(stored.image(0), torch.from_numpy(np.array(decode_fitted(paths[0], (48, 48), 3, "crop"))))

    def no_decoding(*a, **k):
        raise AssertionError("decoded again")

    monkeypatch.setattr(store, "decode_fitted", no_decoding)
    again, errors2 = build_store(paths, (48, 48), 3, cache_dir=tmp_path / "c", workers=1, progress=False)
    assert np.array_equal(again.array, stored.array) and errors2 == errors
    os.utime(paths[0], ns=(1, 1))  # a changed file: the store is rebuilt
    with pytest.raises(AssertionError, match="decoded again"):
        build_store(paths, (48, 48), 3, cache_dir=tmp_path / "c", workers=1, progress=False)


def test_parallel_decoding_gives_the_same_store(tmp_path, monkeypatch):
    monkeypatch.setattr(store, "PARALLEL_FROM", 40)
    paths = noise_jpegs(tmp_path / "p", 46, size=(120, 90))
    one, _ = build_store(paths, (40, 40), 3, cache_dir=tmp_path / "a", workers=1, progress=False)
    two, _ = build_store(paths, (40, 40), 3, cache_dir=tmp_path / "b", workers=2, progress=False)
    assert np.array_equal(np.asarray(one.array), np.asarray(two.array))


def photo_folder(root: Path, n: int = 12) -> Path:
    for c, cls in enumerate(("cat", "dog")):
        for split in ("train", "test"):
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            rng = np.random.default_rng(c)
            for k in range(n):
                arr = rng.integers(0, 255, (300, 400, 3))
                arr[..., c] = 230
                Image.fromarray(arr.astype(np.uint8)).save(d / f"{k}.jpg", quality=85)
    return root


def test_training_reads_photos_from_the_store_and_evaluation_sees_what_files_give(tmp_path):
    root = photo_folder(tmp_path / "photos")
    cfg = configs(data={"name": "folder", "root": str(root), "image_size": 96, "val_fraction": 0}, model="photonet",
                  trainer={"device": "cpu", "batch_size": 8, "progress": False})
    s = setup(cfg)
    assert s.bundle.train.stored is not None and s.bundle.test.stored is not None
    assert s.bundle.train.stored.array.shape[1:] == (3, s.bundle.resize, s.bundle.resize)  # 110 px for 96
    x, y = next(iter(make_loader(s.bundle, s.bundle.train, train=True, batch_size=8, workers=0)))
    assert x.shape == (8, 3, 96, 96) and x.dtype == torch.float32 and y.shape == (8,)
    from_store = next(iter(make_loader(s.bundle, s.bundle.test, train=False, batch_size=24, workers=0)))[0]
    files = setup(configs(data={**cfg.data.__dict__, "photo_cache": False}, model="photonet",
                          trainer={"device": "cpu", "batch_size": 8, "progress": False}))
    assert files.bundle.test.stored is None
    from_files = next(iter(make_loader(files.bundle, files.bundle.test, train=False, batch_size=24, workers=0)))[0]
    # the same resize-and-centre-crop geometry; only the resampling differs (JPEG draft, PIL vs torch resize)
    assert (from_store - from_files).abs().mean() < 0.15
    sub = s.bundle.test.subset([5, 0])
    assert torch.equal(sub.stored.image(1), s.bundle.test.stored.image(0))


def test_a_cache_folder_that_cannot_be_written_is_named(tmp_path):
    paths = noise_jpegs(tmp_path / "p", 2)
    blocked = tmp_path / "file"
    blocked.write_text("a file where the cache folder should be")
    with pytest.raises(store.ImgclsError, match="cannot write the decoded images to .*file.*data.cache_dir"):
        build_store(paths, (16, 16), 3, cache_dir=blocked / "sub", workers=1, progress=False)
    empty, errors = build_store([], (16, 16), 3, cache_dir=tmp_path / "c", workers=1, progress=False)
    assert len(empty) == 0 and empty.array.shape == (0, 3, 16, 16) and errors == []
