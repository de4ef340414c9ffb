"""Grad-CAM looks where the evidence is: a bright square in one corner decides the class."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from imgcls.explain import explain, find_target_layer
from imgcls.models import create_model
from imgcls.training.run import train

pytest.importorskip("pytorch_grad_cam")


def corner_squares(root, n: int = 24, size: int = 32, seed: int = 0):
    """Class "tl": a bright 10x10 square in the top-left corner; class "br": in the bottom-right; noise elsewhere."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", n), ("test", 4)):
        for cls in ("tl", "br"):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(count):
                a = rng.integers(0, 90, (size, size, 3)).astype(np.uint8)
                if cls == "tl":
                    a[1:11, 1:11] = 250
                else:
                    a[-11:-1, -11:-1] = 250
                Image.fromarray(a).save(d / f"{i}.png")
    return root


def test_target_layer_is_the_last_spatial_map():
    net = create_model("resnet_cifar20", num_classes=3, width=4).eval()
    name, _ = find_target_layer(net, torch.zeros(1, 3, 32, 32))
    assert name.startswith("layer3")
    name, _ = find_target_layer(create_model("simple_cnn", num_classes=3, width=4).eval(), torch.zeros(1, 3, 32, 32))
    assert name.startswith("features")


def test_gradcam_mass_sits_in_the_corner_with_the_square(tmp_path):
    root = corner_squares(tmp_path / "data")
    r = train(data={"name": "folder", "root": str(root), "val_fraction": 0}, model={"name": "resnet_cifar20", "width": 8},
              aug={"flip": False, "crop_pad": 0}, optim={"lr": 0.05},
              trainer={"epochs": 6, "batch_size": 8, "progress": False, "threads": 1, "project": str(tmp_path / "runs")})
    assert r.metrics["top1"] == 1.0
    out, exps = explain(r.best, root / "test" / "tl", out_dir=tmp_path / "cam")
    assert len(exps) == 4 and all(e.predicted == "tl" for e in exps)
    for e in exps:
        for method, cam in e.cams.items():
            h, w = cam.shape
            corner = cam[: h // 2, : w // 2].sum() / cam.sum()
            assert corner > 0.5, f"{method}: only {corner:.0%} of the map in the top-left quarter"
    grid = Image.open(out / "gradcam.png")
    assert grid.format == "PNG" and grid.width > 200
    assert (out / "explain.csv").read_text().count("\n") == 5


def test_target_layer_of_library_backbones():
    pytest.importorskip("timm")
    net = create_model("timm", arch="resnet10t", num_classes=3).eval()
    name, _ = find_target_layer(net, torch.zeros(1, 3, 64, 64))
    assert name.startswith("layer4")
    net = create_model("torchvision", arch="mobilenet_v3_small", num_classes=3).eval()
    name, _ = find_target_layer(net, torch.zeros(1, 3, 96, 96))
    assert name.startswith("body.features")
