"""Embeddings: maps of a split, and a search whose nearest neighbour of an indexed image is itself."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file

import imgcls.explain.embed as embed_mod
from imgcls.explain.embed import embed, search
from imgcls.training.run import train


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from tests.conftest import write_image_folder

    base = tmp_path_factory.mktemp("embed")
    root = write_image_folder(base / "data", n_train=10, n_test=6)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IMGCLS_CACHE", str(base / "cache"))
        r = train(data={"name": "folder", "root": str(root), "val_fraction": 0}, model={"name": "simple_cnn", "width": 4},
                  trainer={"epochs": 2, "batch_size": 8, "progress": False, "threads": 1, "project": str(base / "runs")})
    return root, r.best


def test_embed_writes_features_and_maps(trained, tmp_path):
    root, ckpt = trained
    out = embed(ckpt, split="test", out_dir=tmp_path / "e", device="cpu")
    t = load_file(str(out / "embeddings.safetensors"))
    assert t["features"].shape == (18, 16) and t["labels"].shape == (18,)
    for name in ("pca.png", "tsne.png"):
        img = Image.open(out / name)
        assert img.format == "PNG" and img.width > 300 and img.height > 300


def test_nearest_neighbour_of_an_indexed_image_is_itself_and_the_index_is_reused(trained, tmp_path, monkeypatch):
    root, ckpt = trained
    folder = root / "test"
    query = sorted((folder / "green").iterdir())[2]
    out, results = search(ckpt, folder, query, k=3, out_dir=tmp_path / "s", device="cpu")
    assert results[0]["path"] == str(query) and results[0]["similarity"] == pytest.approx(1.0, abs=1e-4)
    assert [r["similarity"] for r in results] == sorted((r["similarity"] for r in results), reverse=True)
    assert (out / "search.png").is_file()
    assert len(list((Path(os.environ["IMGCLS_CACHE"]) / "search").glob("*.safetensors"))) == 1
    assert not list(folder.glob(".*"))  # nothing written into the user's image folder
    assert json.loads((out / "results.json").read_text())["results"][0]["path"] == str(query)

    calls = []
    real = embed_mod.embed_batch
    monkeypatch.setattr(embed_mod, "embed_batch", lambda m, x: calls.append(len(x)) or real(m, x))
    search(ckpt, folder, query, k=3, out_dir=tmp_path / "s2", device="cpu")
    assert calls == [1]  # only the query: the saved index was reused


def test_activation_maximisation_raises_its_objective(trained, tmp_path):
    from imgcls.explain.visualize import visualize

    root, ckpt = trained
    out, rows = visualize(ckpt, classes=["red", "blue"], steps=40, out_dir=tmp_path / "v", device="cpu")
    assert [r["target"] for r in rows] == ["red", "blue"]
    assert all(r["objective_after"] > r["objective_before"] + 0.1 for r in rows), rows
    blue = np.asarray(Image.open(out / "01_blue.png")).astype(float)
    assert blue[..., 2].mean() > blue[..., 0].mean()  # the "blue" class is excited by blue pixels
    out, rows = visualize(ckpt, channels=[0, 1], steps=20, out_dir=tmp_path / "c", device="cpu")
    assert len(rows) == 2 and all(r["objective_after"] > r["objective_before"] for r in rows)
    assert Image.open(out / "visualize.png").format == "PNG"
