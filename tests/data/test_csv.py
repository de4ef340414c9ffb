"""data=csv: labels from a file of path,label[,split] rows; bad rows named by line and skipped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import imgcls
from imgcls.config import DataConfig
from imgcls.data import load_data
from imgcls.errors import ImgclsError


def images(folder: Path, n: int) -> list[str]:
    """n small images per class (dark, bright), named by class: the CSV gives their labels."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = []
    for cls, level in (("dark", 40), ("bright", 210)):
        for i in range(n):
            a = np.clip(level + rng.normal(0, 20, (12, 12, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(a).save(folder / f"{cls}{i}.png")
            names.append(f"{folder.name}/{cls}{i}.png")
    return names


def test_a_csv_with_a_missing_file_and_bad_rows_trains_on_the_rest_and_names_them(tmp_path):
    names = images(tmp_path / "imgs", 10)
    (tmp_path / "imgs" / "junk.png").write_bytes(b"not an image")
    lines = ["path,label,split"] + [f"{n},{'dark' if 'dark' in n else 'bright'},{'test' if n[-5] in '89' else ''}"
                                    for n in names]
    lines += ["imgs/gone.png,dark", "imgs/dark0.png,", "imgs/dark1.png,dark,train,extra", "imgs/junk.png,bright",
              "imgs/dark2.png,dark,holdout"]
    csv = tmp_path / "labels.csv"
    csv.write_text("\n".join(lines) + "\n")
    b = load_data(DataConfig(name="csv", root=str(csv), val_fraction=0))
    assert b.classes == ["bright", "dark"] and len(b.train) == 16 and len(b.test) == 4
    assert sorted(b.train.labels.tolist()) == [0] * 8 + [1] * 8
    notes = "\n".join(b.notes)
    for line, what in ((22, "gone.png does not exist"), (23, "empty label"), (24, "4 columns"),
                       (25, "junk.png is not a readable image"), (26, "split 'holdout'")):
        assert f"labels.csv line {line}: " in notes and what in notes, (line, what)
    r = imgcls.train(data={"name": "csv", "root": str(csv), "val_fraction": 0}, model={"name": "mlp", "hidden": [16]},
                     trainer={"epochs": 2, "batch_size": 4, "threads": 1, "device": "cpu", "progress": False,
                              "project": str(tmp_path / "runs")})
    assert r.metrics["num_samples"] == 4 and 0 <= r.metrics["top1"] <= 1


def test_a_csv_without_a_good_row_is_an_error_naming_why(tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_text("a.png,cat\nb.png,dog\n")
    with pytest.raises(ImgclsError, match=r"no usable training row in .*labels.csv .*line 1: .*a.png does not exist"):
        load_data(DataConfig(name="csv", root=str(csv)))
    with pytest.raises(ImgclsError, match="is not a file"):
        load_data(DataConfig(name="csv", root=str(tmp_path / "nope.csv")))
