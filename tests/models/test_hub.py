"""timm and torchvision adapters: local weights load exactly, heads and stems are adapted, offline errors are clear."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from imgcls.config import DataConfig, ModelConfig, model_config
from imgcls.errors import ImgclsError
from imgcls.models import create_model, list_models
from imgcls.models.build import build_model
from imgcls.setup import fill_data_defaults

timm = pytest.importorskip("timm")


def test_adapters_are_two_registry_entries_not_a_thousand():
    names = list_models()
    assert "timm" in names and "torchvision" in names
    assert not any(n.startswith("resnet18") or n == "mobilenet_v3_small" for n in names)


def test_cli_style_config_names_the_library_model():
    cfg = model_config({"adapter": "timm", "name": "resnet18", "pretrained": "w.pth", "freeze": "backbone"})
    assert cfg == ModelConfig(name="timm", args={"arch": "resnet18"}, pretrained="w.pth", freeze="backbone")
    assert model_config({"name": "timm", "arch": "resnet18"}).args == {"arch": "resnet18"}  # a saved config round-trips


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_timm_model_from_a_local_file_has_exactly_its_weights(tmp_path, suffix):
    torch.manual_seed(1)
    src = timm.create_model("resnet10t", num_classes=1000)  # stands in for downloaded ImageNet weights
    path = tmp_path / f"resnet10t{suffix}"
    sd = {k: v.contiguous() for k, v in src.state_dict().items()}
    torch.save(sd, path) if suffix == ".pth" else save_file(sd, str(path))

    torch.manual_seed(2)
    net, args, report = build_model(ModelConfig(name="timm", args={"arch": "resnet10t"}, pretrained=str(path)),
                                    num_classes=7, in_chans=3)
    assert args == {"arch": "resnet10t", "num_classes": 7, "in_chans": 3}
    own = net.state_dict()
    for k, v in sd.items():
        if not k.startswith("fc."):
            assert torch.equal(own[k], v), k
    assert net.get_classifier().out_features == 7
    assert sorted(report.mismatched) == ["fc.bias", "fc.weight"]  # the 1000-class head is replaced, not loaded
    x = torch.randn(2, 3, 64, 64)
    net.eval(), src.eval()
    assert torch.allclose(net.forward_head(net.forward_features(x), pre_logits=True),
                          src.forward_head(src.forward_features(x), pre_logits=True))


def test_rgb_weights_into_a_grayscale_timm_model_sum_the_stem_filters(tmp_path):
    src = timm.create_model("resnet10t", num_classes=10)
    path = tmp_path / "w.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}}, path)
    net, _, report = build_model(ModelConfig(name="timm", args={"arch": "resnet10t"}, pretrained=str(path)),
                                 num_classes=10, in_chans=1)
    stem = "conv1.0.weight"
    assert report.adapted == [stem]
    assert torch.allclose(net.state_dict()[stem], src.state_dict()[stem].sum(1, keepdim=True))


def test_torchvision_weights_file_fits_the_adapter(tmp_path):
    import torchvision

    torch.manual_seed(0)
    src = torchvision.models.get_model("mobilenet_v3_small", num_classes=4)
    path = tmp_path / "mobilenet_v3_small.pth"
    torch.save(src.state_dict(), path)
    net, _, report = build_model(ModelConfig(name="torchvision", args={"arch": "mobilenet_v3_small"}, pretrained=str(path)),
                                 num_classes=4, in_chans=3)
    assert not report.missing and not report.mismatched and not report.unexpected  # head mapped too: same size
    src.eval(), net.eval()
    x = torch.randn(2, 3, 64, 64)
    assert torch.allclose(net(x), src(x), atol=1e-6)
    assert net.forward_head(net.forward_features(x), pre_logits=True).shape == (2, net.num_features)


def test_download_failure_says_what_to_fetch(monkeypatch):
    def offline(*a, pretrained=False, **k):
        if pretrained:
            raise OSError("We couldn't connect to 'https://huggingface.co'")
        return timm.models.create_model(*a, **k)

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(ImgclsError) as e:
        build_model(ModelConfig(name="timm", args={"arch": "resnet18"}, pretrained="true"), num_classes=3, in_chans=3)
    msg = str(e.value)
    assert "huggingface.co/timm/resnet18" in msg and "model.pretrained=" in msg


def test_pretrained_true_is_for_library_models_only():
    with pytest.raises(ImgclsError, match="give a weights file"):
        build_model(ModelConfig(name="simple_cnn", pretrained="true"), num_classes=3, in_chans=3)


def test_unknown_library_model_suggests_names():
    with pytest.raises(ImgclsError, match="resnet18"):
        create_model("timm", arch="resnet18x", num_classes=3)
    with pytest.raises(ImgclsError, match="no classification model"):
        create_model("torchvision", arch="nonet", num_classes=3)


def test_data_format_comes_from_the_pretrained_config():
    m = ModelConfig(name="timm", args={"arch": "resnet18"}, pretrained="true")
    d, implied = fill_data_defaults(DataConfig(name="folder"), m)
    assert d.image_size == 224 and d.mean == pytest.approx([0.485, 0.456, 0.406]) and set(implied) == {"image_size", "mean", "std"}
    d, implied = fill_data_defaults(DataConfig(name="folder", image_size=96), m)  # what the user set wins
    assert d.image_size == 96 and "image_size" not in implied
    d, _ = fill_data_defaults(DataConfig(name="folder"), ModelConfig(name="timm", args={"arch": "resnet18"}))
    assert d.image_size is None and d.mean is None  # from scratch: the data set's own
    m = ModelConfig(name="torchvision", args={"arch": "mobilenet_v3_small"}, pretrained="true")
    assert fill_data_defaults(DataConfig(name="folder", channels=1), m)[0].mean == pytest.approx([0.449])


def test_in_memory_data_keeps_its_size_and_an_imgcls_file_gives_its_own_format(tmp_path):
    from imgcls.modelfile import ModelMeta, Preprocess, save_model

    m = ModelConfig(name="timm", args={"arch": "resnet18"}, pretrained="true")
    d, implied = fill_data_defaults(DataConfig(name="cifar10"), m)
    assert d.image_size is None and "image_size" not in implied and d.mean is not None  # not 50,000 images at 224
    net = create_model("timm", arch="resnet10t", num_classes=3)
    meta = ModelMeta(arch="timm", arch_args={"arch": "resnet10t", "num_classes": 3, "in_chans": 3}, classes=["a", "b", "c"],
                     preprocess=Preprocess(input_size=[48, 48], channels=3, mean=[0.1, 0.2, 0.3], std=[0.4, 0.5, 0.6]))
    path = save_model(tmp_path / "m.safetensors", net, meta)
    d, _ = fill_data_defaults(DataConfig(name="folder"), ModelConfig(name="timm", args={"arch": "resnet10t"}, pretrained=str(path)))
    assert (d.image_size, d.mean, d.std) == (48, [0.1, 0.2, 0.3], [0.4, 0.5, 0.6])


def test_evaluating_weights_whose_head_does_not_fit_is_refused(tmp_path, image_folder):
    from imgcls.evaluation import evaluate

    src = create_model("simple_cnn", num_classes=10, width=4)
    path = tmp_path / "w.pth"
    torch.save(src.state_dict(), path)
    with pytest.raises(ImgclsError, match="random head"):
        evaluate(model={"name": "simple_cnn", "width": 4, "pretrained": str(path)},
                 data={"name": "folder", "root": str(image_folder())}, out_dir=tmp_path / "e", threads=1)


def test_a_timm_vit_is_built_for_the_data_size_and_rebuilds_from_its_model_file(tmp_path):
    from imgcls.modelfile import ModelMeta, Preprocess, save_model
    from imgcls.models import load_model

    net, args, _ = build_model(ModelConfig(name="timm", args={"arch": "vit_tiny_patch16_224"}), num_classes=3, in_chans=3,
                               image_size=(32, 32))
    assert args["img_size"] == 32 and net(torch.zeros(2, 3, 32, 32)).shape == (2, 3)
    meta = ModelMeta(arch="timm", arch_args=args, classes=["a", "b", "c"],
                     preprocess=Preprocess(input_size=[32, 32], channels=3, mean=[0.5] * 3, std=[0.5] * 3))
    again = load_model(save_model(tmp_path / "vit.safetensors", net, meta))
    x = torch.randn(1, 3, 32, 32)
    net.eval()
    assert torch.equal(again(x), net(x))
    cnn, args, _ = build_model(ModelConfig(name="timm", args={"arch": "resnet10t"}), num_classes=3, in_chans=3,
                               image_size=(40, 40))  # a CNN takes any size: img_size is recorded, not needed
    assert cnn(torch.zeros(1, 3, 40, 40)).shape == (1, 3)
