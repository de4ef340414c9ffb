"""Dirty data: `doctor` finds every kind of bad file, duplicates and leakage; training on such a folder completes."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import imgcls.data.doctor as doctor_mod
from imgcls.config import DataConfig
from imgcls.data import load_data
from imgcls.data.doctor import doctor
from imgcls.training.run import train
from tests.conftest import write_image_folder


def bomb_png(side: int = 40_000) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def encoded(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


BAD = {  # file name -> the reason doctor gives
    "empty.png": "empty file",
    "truncated.jpg": "cannot decode",
    "truncated.png": "cannot decode",
    "text.jpg": "not an image file",
    "bomb.png": "decompression bomb",
    "loop.png": "symbolic link loop",
    "dangling.png": "broken symbolic link",
    "pipe.png": "not a regular file",
}


def make_dirty(root: Path) -> Path:
    """Coloured squares in train/test, plus every kind of bad file and odd mode in train/red."""
    write_image_folder(root, n_train=8, n_test=3, size=12)
    red = root / "train" / "red"
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
    (red / "empty.png").write_bytes(b"")
    (red / "truncated.jpg").write_bytes(encoded(photo, "JPEG", quality=90)[:300])
    (red / "truncated.png").write_bytes(encoded(photo, "PNG")[:-40])
    (red / "text.jpg").write_text("this is not a JPEG")
    (red / "bomb.png").write_bytes(bomb_png())
    os.symlink("loop.png", red / "loop.png")  # points at itself
    os.symlink("nowhere.png", red / "dangling.png")
    os.mkfifo(red / "pipe.png")  # opening it for reading would block forever
    (red / "notes.txt").write_text("not an image extension")
    # odd modes, all readable: converted to RGB
    base = Image.new("RGB", (12, 12), (210, 40, 40))
    base.convert("RGBA").save(red / "rgba.png")
    base.convert("P").save(red / "palette.png")
    base.convert("CMYK").save(red / "cmyk.jpg")
    base.convert("L").save(red / "gray.png")
    Image.fromarray((np.full((12, 12), 50000)).astype(np.uint16)).save(red / "sixteen.png")
    # an exact duplicate across train and test (leakage) and one within train with another label
    (root / "test" / "red" / "leak.png").write_bytes((red / "000.png").read_bytes())
    (root / "train" / "blue" / "conflict.png").write_bytes((red / "001.png").read_bytes())
    return root


def test_doctor_finds_every_problem(tmp_path):
    root = make_dirty(tmp_path / "dirty")
    rep = doctor({"name": "folder", "root": str(root)}, out_dir=tmp_path / "out")
    found = {Path(u["path"]).name: u["error"] for u in rep.unreadable}
    assert set(found) == set(BAD)
    for name, reason in BAD.items():
        assert reason in found[name], (name, found[name])
    assert [Path(p).name for p in rep.ignored] == ["notes.txt"]
    # counts: readable images only; the odd modes count as images
    assert rep.counts["train"]["red"] == 8 + 5 and rep.counts["train"]["blue"] == 9 and rep.counts["test"]["red"] == 4
    assert {"RGBA", "P", "CMYK", "L", "RGB"} <= set(rep.modes) and any(m.startswith("I") for m in rep.modes)
    leaks = [d for d in rep.duplicates_across if any(f.endswith("leak.png") for f in d["files"])]
    assert len(leaks) == 1 and leaks[0]["splits"] == ["test", "train"]
    assert len(rep.conflicting_labels) == 1 and sorted(rep.conflicting_labels[0]["classes"]) == ["blue", "red"]
    assert rep.problems == len(BAD) + 1 + 1
    assert (tmp_path / "out" / "doctor.json").is_file() and "problem(s) found" in (tmp_path / "out" / "doctor.txt").read_text()


def test_doctor_caches_the_scan(tmp_path, monkeypatch):
    root = write_image_folder(tmp_path / "d", n_train=5, n_test=2, size=8)
    first = doctor({"name": "folder", "root": str(root)}, out_dir=tmp_path / "o1")
    assert first.from_cache == 0 and first.scanned == 21
    calls = []
    real = doctor_mod.scan_file
    monkeypatch.setattr(doctor_mod, "scan_file", lambda job: calls.append(job) or real(job))
    (root / "train" / "red" / "000.png").write_bytes((root / "train" / "red" / "001.png").read_bytes())  # one change
    second = doctor({"name": "folder", "root": str(root)}, out_dir=tmp_path / "o2")
    assert second.from_cache == 20 and [Path(j[2]).name for j in calls] == ["000.png"]
    assert len(second.duplicates_within) == 1


def test_training_on_a_dirty_folder_completes_and_names_each_bad_file_once(tmp_path, capsys):
    root = make_dirty(tmp_path / "dirty")
    bundle = load_data(DataConfig(name="folder", root=str(root)))
    skipped = [n for n in bundle.notes if n.startswith("skipped")]
    for name in BAD:
        assert sum(name in n for n in skipped) == 1, (name, skipped)
    assert bundle.channels == 3 and bundle.train.images.shape[1:] == (3, 12, 12)
    r = train(data={"name": "folder", "root": str(root)}, model={"name": "simple_cnn", "width": 4},
              trainer={"epochs": 1, "batch_size": 8, "project": str(tmp_path / "runs"), "progress": False,
                       "threads": 1, "device": "cpu"})
    assert r.best.is_file() and 0 <= r.metrics["top1"] <= 1


@pytest.mark.integration
def test_doctor_on_mnist_in_memory(data_root, tmp_path):
    if not (data_root / "MNIST" / "raw").is_dir():
        pytest.skip(f"MNIST is not under {data_root}")
    rep = doctor({"name": "mnist", "root": str(data_root)}, out_dir=tmp_path)
    assert sum(rep.counts["train"].values()) == 60000 and sum(rep.counts["test"].values()) == 10000
    assert rep.modes == {"L": 70000} and not rep.unreadable
