"""Every registered model: shapes, gradients, the features/head split; and the registry's errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import imgcls.models.registry as registry
from imgcls.errors import ImgclsError
from imgcls.models import create_model, list_models, model_accepts, register_model
from imgcls.models.build import freeze_backbone, head_parameter_names

NUM_CLASSES = 5
BATCH = 3


def build(name: str, in_chans: int, size: int) -> nn.Module:
    kwargs = {"img_size": size} if model_accepts(name, "img_size") else {}
    torch.manual_seed(0)
    return create_model(name, num_classes=NUM_CLASSES, in_chans=in_chans, **kwargs)


def test_registry_lists_the_builtin_models():
    names = list_models()
    assert names == sorted(names)
    assert {"mlp", "simple_cnn", "lenet5", "alexnet_small", "vgg", "resnet_cifar20", "resnet_cifar32", "resnet_cifar44",
            "resnet_cifar56", "mobilenet_v1", "mobilenet_v2", "fastnet", "timm", "torchvision"} <= set(names)
    assert list_models("resnet_cifar*") == ["resnet_cifar20", "resnet_cifar32", "resnet_cifar44", "resnet_cifar56"]


@pytest.mark.parametrize("size", [28, 32])
@pytest.mark.parametrize("in_chans", [1, 3])
@pytest.mark.parametrize("name", list_models())
def test_forward_backward(name, in_chans, size):
    model = build(name, in_chans, size)
    x = torch.randn(BATCH, in_chans, size, size, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 4])

    model.train()
    out = model(x)
    assert out.shape == (BATCH, NUM_CLASSES)
    assert torch.isfinite(out).all()
    nn.functional.cross_entropy(out, y).backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable
    for n, p in trainable:
        assert p.grad is not None, f"{name}: no gradient for {n}"
        assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient for {n}"
    assert any(p.grad.abs().sum() > 0 for _, p in trainable)

    model.eval()
    with torch.no_grad():
        full = model(x)
        feats = model.forward_features(x)
        assert torch.equal(model.forward_head(feats), full)
        pre = model.forward_head(feats, pre_logits=True)
    assert pre.shape == (BATCH, model.num_features)
    assert torch.isfinite(pre).all()


@pytest.mark.parametrize("name", list_models())
def test_every_model_can_be_frozen_to_its_head(name):
    """model.freeze=backbone finds each model's classifier: only it stays trainable."""
    model = build(name, 3, 32)
    head = head_parameter_names(model)
    frozen = freeze_backbone(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == head and frozen and not (set(frozen) & head)
    assert all(p.shape[0] == NUM_CLASSES for n, p in model.named_parameters() if n in head)


@pytest.mark.parametrize("name, args, params", [
    ("lenet5", {}, 61_706), ("mobilenet_v2", {"width": 0.25, "last_channels": 320}, 162_602),
    ("mobilenet_v1", {"width": 0.25}, 215_642), ("vgg", {"depth": 11}, 9_228_362), ("resnet_cifar56", {}, 853_018)])
def test_parameter_counts(name, args, params):
    """The sizes docs/models.md quotes (10 classes, RGB; LeNet-5 gray)."""
    model = create_model(name, num_classes=10, in_chans=1 if name == "lenet5" else 3, **args)
    assert sum(p.numel() for p in model.parameters()) == params


def test_width_multiplier_shrinks_mobilenets():
    sizes = [sum(p.numel() for p in create_model("mobilenet_v2", num_classes=10, width=w).parameters()) for w in (0.25, 0.5, 1.0)]
    assert sizes == sorted(sizes) and sizes[2] > 5 * sizes[0]
    with pytest.raises(ImgclsError, match="depth=12"):
        create_model("vgg", num_classes=10, depth=12)


def test_mlp_input_size_follows_img_size():
    model = create_model("mlp", num_classes=3, in_chans=3, img_size=8, hidden=[16])
    assert model(torch.zeros(2, 3, 8, 8)).shape == (2, 3)
    with pytest.raises(RuntimeError):
        model(torch.zeros(2, 3, 16, 16))


def test_img_size_is_dropped_for_models_that_do_not_take_it():
    model = create_model("simple_cnn", num_classes=3, in_chans=3, img_size=64, width=4)
    assert model.num_features == 16
    assert model(torch.zeros(2, 3, 20, 20)).shape == (2, 3)


def test_builder_options_are_passed():
    assert create_model("simple_cnn", num_classes=2, width=8).num_features == 32
    assert create_model("resnet_cifar20", num_classes=2, width=8).num_features == 32
    assert create_model("mlp", num_classes=2, in_chans=1, hidden=[7, 5]).num_features == 5


@pytest.fixture
def isolated_registry(monkeypatch):
    monkeypatch.setattr(registry, "_MODELS", dict(registry._MODELS))


def test_register_new_model_and_duplicate_name_raises(isolated_registry):
    def tiny_test_net(*, num_classes: int, in_chans: int = 3):
        return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))

    assert register_model(tiny_test_net) is tiny_test_net
    assert "tiny_test_net" in list_models()
    assert isinstance(create_model("tiny_test_net", num_classes=2), nn.Sequential)

    def tiny_test_net(*, num_classes: int, in_chans: int = 3):  # noqa: F811  (same name on purpose)
        return nn.Identity()

    with pytest.raises(ValueError, match="tiny_test_net"):
        register_model(tiny_test_net)


def test_duplicate_of_builtin_name_raises(isolated_registry):
    def mlp(*, num_classes: int, in_chans: int = 3):
        return nn.Identity()

    with pytest.raises(ValueError, match="already registered"):
        register_model(mlp)
    assert create_model("mlp", num_classes=2).__class__.__name__ == "MLP"  # the original is kept


def test_unknown_model_lists_available_names():
    with pytest.raises(ImgclsError, match="unknown model 'resnet9000'") as e:
        create_model("resnet9000", num_classes=10)
    for name in list_models():
        assert name in str(e.value)


def test_unknown_option_is_named():
    with pytest.raises(ImgclsError, match="bogus_option") as e:
        create_model("simple_cnn", num_classes=10, bogus_option=3)
    msg = str(e.value)
    assert "simple_cnn" in msg and "width" in msg and "dropout" in msg  # lists the real options
