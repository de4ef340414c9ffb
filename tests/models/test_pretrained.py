"""`model.pretrained=PATH`: foreign weights into our models, safely, with a report of what did not fit."""

from __future__ import annotations

import pytest
import torch

import imgcls
from imgcls.errors import ImgclsError
from imgcls.modelfile import ModelMeta, Preprocess, save_model
from imgcls.models import create_model
from imgcls.models.pretrained import load_pretrained


def tiny_resnet(num_classes: int = 10, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model("resnet_cifar20", num_classes=num_classes, width=4).eval()


def test_module_prefixed_checkpoint_loads_exactly(tmp_path):
    src = tiny_resnet(seed=1)
    path = tmp_path / "resnet20.th"  # the layout of Y. Idelbayev's published files
    torch.save({"best_prec1": 91.7, "state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}}, path)
    dst = tiny_resnet(seed=2)
    x = torch.randn(2, 3, 32, 32)
    assert not torch.allclose(dst(x), src(x))
    report = load_pretrained(dst, path)
    assert torch.equal(dst(x), src(x))
    assert not report.missing and not report.unexpected and not report.mismatched
    assert "loaded" in report.summary()


def test_head_of_another_size_is_kept_and_reported(tmp_path):
    src = tiny_resnet(10, seed=1)
    path = tmp_path / "w.pt"
    torch.save(src.state_dict(), path)
    dst = tiny_resnet(5, seed=2)
    head_before = dst.linear.weight.clone()
    report = load_pretrained(dst, path)
    assert report.mismatched == ["linear.bias", "linear.weight"]
    assert torch.equal(dst.linear.weight, head_before)  # left as initialised: a fresh head
    assert torch.equal(dst.conv1.weight, src.conv1.weight)
    feats = torch.randn(2, 3, 32, 32)
    assert torch.equal(dst.forward_features(feats), src.forward_features(feats))


def test_imgcls_model_file_is_a_pretrained_source(tmp_path):
    src = tiny_resnet(10, seed=1)
    meta = ModelMeta(arch="resnet_cifar20", arch_args={"num_classes": 10, "in_chans": 3, "width": 4},
                     classes=[str(i) for i in range(10)],
                     preprocess=Preprocess(input_size=[32, 32], channels=3, mean=[0.5] * 3, std=[0.25] * 3))
    path = save_model(tmp_path / "cifar.safetensors", src, meta)
    dst = tiny_resnet(3, seed=2)
    report = load_pretrained(dst, path)
    assert len(report.loaded) == len(src.state_dict()) - 2 and len(report.mismatched) == 2


def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))  # unpickling this would create the marker file

    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"x": Payload()}}, path)
    with pytest.raises(ImgclsError, match="refused to load .*evil.pth"):
        load_pretrained(tiny_resnet(), path)
    assert not marker.exists()


def test_weights_of_another_architecture_and_missing_files(tmp_path):
    path = tmp_path / "mlp.pt"
    torch.save(create_model("mlp", num_classes=10, in_chans=1, img_size=28).state_dict(), path)
    with pytest.raises(ImgclsError, match="none of the .* tensors in .*mlp.pt fit"):
        load_pretrained(tiny_resnet(), path)
    with pytest.raises(ImgclsError, match="not found"):
        load_pretrained(tiny_resnet(), tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ImgclsError, match="junk.pt"):
        load_pretrained(tiny_resnet(), tmp_path / "junk.pt")


def test_evaluate_and_train_from_pretrained_weights(image_folder, tmp_path):
    root = image_folder(n_train=6, n_test=4, size=16)
    torch.manual_seed(0)
    src = create_model("simple_cnn", num_classes=3)
    path = tmp_path / "w.pth"
    torch.save({"model": src.state_dict()}, path)
    data = {"name": "folder", "root": str(root), "val_fraction": 0}
    m = imgcls.evaluate(model={"name": "simple_cnn", "pretrained": str(path)}, data=data, project=str(tmp_path),
                        threads=1)
    assert m["num_samples"] == 12 and "loaded" in m["pretrained"]
    assert (tmp_path / m["out_dir"].split("/")[-1] / "metrics.json").is_file()
    with pytest.raises(ImgclsError, match="either ckpt"):
        imgcls.evaluate(path, model="simple_cnn", data=data)
    with pytest.raises(ImgclsError, match="model.pretrained"):
        imgcls.evaluate(model="simple_cnn", data=data)
    # Training starts from the file: with a zero learning rate the learned weights stay the file's.
    r = imgcls.train(data=data, model={"name": "simple_cnn", "pretrained": str(path)}, optim={"lr": 0.0},
                     trainer={"epochs": 1, "project": str(tmp_path), "progress": False, "threads": 1})
    trained = imgcls.load_model(r.last)
    for k, v in src.state_dict().items():
        if "running" not in k and "num_batches" not in k:
            assert torch.equal(trained.state_dict()[k], v), k
