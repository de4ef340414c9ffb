"""DeepDream: the dreamed image raises the chosen layer's activation; octaves, options and the verb's files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from imgcls.explain.dream import activation, deep_dream, default_layer, dream
from imgcls.models import create_model

MEAN, STD = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return create_model("resnet_cifar20", num_classes=4, width=8).eval()


def photo_like(h: int = 48, w: int = 56, seed: int = 0) -> torch.Tensor:
    """A smooth random image (C, H, W) in [0, 1]: low-frequency colour blobs, as photos have."""
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(1, 3, 6, 7, generator=g)
    return torch.nn.functional.interpolate(small, size=(h, w), mode="bicubic", align_corners=False)[0].clamp(0, 1)


@pytest.mark.parametrize("objective", ["mean", "l2"])
def test_dreaming_raises_the_layers_activation(net, objective):
    image = photo_like()
    layer = net.get_submodule("layer2")
    r = deep_dream(net, image, layer, mean=MEAN, std=STD, objective=objective, octaves=2, steps=6, lr=0.02,
                   min_side=16, octave_scale=1.5)
    with torch.no_grad():
        before = float(activation(net, layer, ((image[None] - 0.5) / 0.25), objective=objective))
        after = float(activation(net, layer, ((r.image[None] - 0.5) / 0.25), objective=objective))
    assert before == pytest.approx(r.before, abs=1e-5) and after == pytest.approx(r.after, abs=1e-5)
    assert after > before + 0.1 * abs(before) + 1e-3, (before, after)  # without the gradient step: after == before
    assert r.image.shape == image.shape and 0 <= float(r.image.min()) and float(r.image.max()) <= 1
    assert (r.image - image).abs().mean() > 0.005  # the photo changed, but stays a photo of the same size


def test_a_channel_alone_can_be_amplified(net):
    image = photo_like(seed=1)
    layer = net.get_submodule("layer3")
    r = deep_dream(net, image, layer, mean=MEAN, std=STD, channel=5, objective="mean", octaves=1, steps=8, lr=0.02)
    with torch.no_grad():
        x0, x1 = (image[None] - 0.5) / 0.25, (r.image[None] - 0.5) / 0.25
        gain5 = float(activation(net, layer, x1, channel=5, objective="mean") - activation(net, layer, x0, 5, "mean"))
    assert gain5 > 0 and r.after == pytest.approx(r.before + gain5, abs=1e-4)


def test_octaves_go_from_small_to_the_input_size_and_the_model_is_left_as_it_was(net):
    net.train()
    flags_before = [p.requires_grad for p in net.parameters()]
    weights = {k: v.clone() for k, v in net.state_dict().items()}
    image = photo_like(60, 90)
    r = deep_dream(net, image, net.get_submodule("layer1"), mean=MEAN, std=STD, octaves=5, octave_scale=1.5, steps=1,
                   min_side=20)
    sizes = [tuple(o.shape[1:]) for o in r.octaves]
    assert sizes == [(27, 40), (40, 60), (60, 90)]  # 60/1.5^3 = 18 < min_side: the two smallest are skipped
    assert len(r.octave_objectives) == 3 and torch.equal(r.image, r.octaves[-1])
    assert net.training and [p.requires_grad for p in net.parameters()] == flags_before
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in weights.items())  # only the image was optimized
    net.eval()


def test_the_default_layer_is_a_block_past_the_middle(net):
    assert default_layer(net, 3) == "layer2"  # of layer1, layer2, layer3
    tv = create_model("torchvision", num_classes=5, arch="mobilenet_v2").eval()
    assert default_layer(tv, 3) == "body.features.11"  # of features.0 ... features.18


def test_the_verb_writes_the_dream_its_octaves_and_settings(tmp_path, image_folder, capsys, monkeypatch):
    import imgcls.cli as cli
    from imgcls.training.run import train

    monkeypatch.setenv("IMGCLS_CACHE", str(tmp_path / "cache"))
    root = image_folder(n_train=8, n_test=2, size=16)
    r = train(data={"name": "folder", "root": str(root), "val_fraction": 0}, model={"name": "resnet_cifar20", "width": 4},
              trainer={"epochs": 1, "batch_size": 8, "progress": False, "threads": 1, "project": str(tmp_path / "runs")})
    photo = tmp_path / "photo.jpg"
    Image.fromarray((photo_like(80, 120).permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(photo)
    cli.main(["dream", f"ckpt={r.best}", f"source={photo}", "octaves=3", "steps=3", "lr=0.02", f"out={tmp_path / 'd'}"])
    out = capsys.readouterr().out
    assert "layer=layer2 (chosen" in out and "dream:" in out
    meta = json.loads((tmp_path / "d" / "dream.json").read_text())
    assert meta["layer"] == "layer2" and meta["octaves"] == 3 and meta["objective_after"] > meta["objective_before"]
    assert Image.open(tmp_path / "d" / "dream.png").size == (120, 80)
    assert Image.open(tmp_path / "d" / "octaves.png").width > 400  # the input and three octaves side by side
    with pytest.raises(SystemExit):  # a layer that does not exist: one line naming some that do
        cli.main(["dream", f"ckpt={r.best}", f"source={photo}", "layer=layer9"])
    err = capsys.readouterr().err
    assert "no layer 'layer9'" in err and "layer1" in err and "Traceback" not in err


def test_imagenet_mobilenet_v2_dreams_on_a_real_photo(tmp_path, data_root):
    weights = Path(os.environ.get("IMGCLS_WEIGHTS", data_root.parent / "weights")) / "imagenet" / "mobilenet_v2-imagenet-fp32.pth"
    photo = data_root / "caltech101_subset" / "101_ObjectCategories" / "dalmatian" / "image_0003.jpg"
    if not weights.is_file() or not photo.is_file():
        pytest.skip(f"needs {weights} and {photo}")
    out, r, layer = dream(photo, model={"name": "torchvision", "arch": "mobilenet_v2", "pretrained": str(weights)},
                          octaves=2, steps=4, max_side=160, out_dir=tmp_path / "d", device="cpu")
    assert layer == "body.features.11" and r.after > 1.5 * r.before
    assert max(Image.open(out / "dream.png").size) == 160
