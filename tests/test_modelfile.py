"""Model files: one safetensors file of weights plus JSON metadata; round trips and every error."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from imgcls.errors import ImgclsError
from imgcls.modelfile import FORMAT_VERSION, META_KEY, ModelMeta, Preprocess, load_weights, read_meta, save_model
from imgcls.models import create_model, load_model

ARGS = {"num_classes": 3, "in_chans": 1, "img_size": 8, "hidden": [16], "dropout": 0.5}


def make_meta(**overrides) -> ModelMeta:
    meta = ModelMeta(arch="mlp", arch_args=dict(ARGS), classes=["cat", "dog", "bird"],
                     preprocess=Preprocess(input_size=[8, 8], channels=1, mean=[0.5], std=[0.25]),
                     metrics={"val_acc": 0.75, "epoch": 3}, train={"data": {"name": "folder", "root": "/x"}})
    for k, v in overrides.items():
        setattr(meta, k, v)
    return meta


@pytest.fixture
def net():
    torch.manual_seed(0)
    return create_model("mlp", **ARGS)


def test_round_trip_outputs_and_meta(tmp_path, net):
    meta = make_meta()
    path = save_model(tmp_path / "sub" / "m.safetensors", net, meta)
    assert path == tmp_path / "sub" / "m.safetensors" and path.is_file()
    assert [p.name for p in path.parent.iterdir()] == ["m.safetensors"]  # no temporary file left behind

    loaded = load_model(path)
    assert not loaded.training  # returned in eval mode
    net.eval()
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))
    for k, v in net.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)

    assert loaded.meta == read_meta(path)
    m = loaded.meta
    assert m.arch == "mlp" and m.arch_args == ARGS
    assert m.classes == ["cat", "dog", "bird"]
    assert m.preprocess == Preprocess(input_size=[8, 8], channels=1, mean=[0.5], std=[0.25])
    assert m.preprocess.resize is None and m.preprocess.interpolation == "bilinear"
    assert m.metrics == {"val_acc": 0.75, "epoch": 3}
    assert m.train == {"data": {"name": "folder", "root": "/x"}}
    assert m.format_version == FORMAT_VERSION
    assert {"imgcls", "torch", "torchvision", "python"} <= set(m.versions) and m.created


def test_file_is_plain_safetensors(tmp_path, net):
    path = save_model(tmp_path / "m.safetensors", net, make_meta())
    with safe_open(str(path), framework="pt") as f:
        assert set(f.keys()) == set(net.state_dict())
        doc = json.loads(f.metadata()[META_KEY])
        assert torch.equal(f.get_tensor("head.weight"), net.state_dict()["head.weight"])
    assert doc["arch"] == "mlp" and doc["classes"] == ["cat", "dog", "bird"]
    # The header is JSON right after an 8-byte length: nothing to unpickle.
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    assert "__metadata__" in header and b"pickle" not in raw[:8 + n]


def test_overwrite_replaces_file(tmp_path, net):
    path = tmp_path / "m.safetensors"
    save_model(path, net, make_meta(metrics={"epoch": 1}))
    save_model(path, net, make_meta(metrics={"epoch": 2}))
    assert read_meta(path).metrics == {"epoch": 2}


def test_missing_file(tmp_path):
    with pytest.raises(ImgclsError, match="not found"):
        read_meta(tmp_path / "nope.safetensors")


def test_not_a_safetensors_file(tmp_path):
    path = tmp_path / "fake.safetensors"
    path.write_text("this is not a model file, just some text")
    with pytest.raises(ImgclsError, match="not a model file"):
        read_meta(path)
    with pytest.raises(ImgclsError):
        load_model(path)


def test_safetensors_without_metadata(tmp_path):
    path = tmp_path / "weights.safetensors"
    save_file({"w": torch.zeros(2, 2)}, str(path))
    with pytest.raises(ImgclsError, match="without imgcls metadata"):
        read_meta(path)


def test_newer_format_version_asks_for_upgrade(tmp_path, net):
    path = save_model(tmp_path / "m.safetensors", net, make_meta(format_version=FORMAT_VERSION + 1))
    with pytest.raises(ImgclsError, match="upgrade"):
        read_meta(path)
    with pytest.raises(ImgclsError, match="upgrade"):
        load_model(path)


def test_weights_of_another_architecture(tmp_path, net):
    path = save_model(tmp_path / "m.safetensors", net, make_meta())
    other = create_model("simple_cnn", num_classes=3, in_chans=1, width=4)
    with pytest.raises(ImgclsError, match="does not fit model 'simple_cnn'") as e:
        load_weights(other, path, arch="simple_cnn")
    assert "missing keys" in str(e.value) and "features.0.0.weight" in str(e.value)


def test_weights_of_another_shape(tmp_path, net):
    path = save_model(tmp_path / "m.safetensors", net, make_meta())
    wider = create_model("mlp", **{**ARGS, "hidden": [32]})  # same keys, other shapes
    with pytest.raises(ImgclsError, match="does not fit model 'mlp'.*size mismatch"):
        load_weights(wider, path, arch="mlp")


def test_meta_with_wrong_arch_args_fails_on_load(tmp_path, net):
    # Metadata that promises another shape than the weights have must not load silently.
    path = save_model(tmp_path / "m.safetensors", net, make_meta(arch_args={**ARGS, "hidden": [8]}))
    with pytest.raises(ImgclsError, match="does not fit"):
        load_model(path)


def test_format_1_files_still_load_without_a_temperature(tmp_path, net):
    import json as _json
    from dataclasses import asdict

    from imgcls.predict import Predictor

    old = asdict(make_meta())
    old.pop("calibration")
    old.pop("task")  # format 3's field: a format-1 file has neither
    old["format_version"] = 1
    path = tmp_path / "v1.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path),
              metadata={META_KEY: _json.dumps(old), "format": "pt"})
    meta = read_meta(path)
    assert meta.calibration == {} and meta.format_version == 3 and meta.task == "classify"
    assert Predictor.load(path, device="cpu").temperature == 1.0
