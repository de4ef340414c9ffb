"""Export (ONNX, .pt2) with its parity check, Predictor on exports, int8 quantization and pruning."""

from __future__ import annotations

import json

import onnx
import pytest
import torch

from imgcls.deploy.export import export
from imgcls.deploy.prune import prunable, prune_model
from imgcls.deploy.quantize import first_layer, quantize
from imgcls.deploy.runtime import META_KEY, PARITY_KEY, OnnxModel, Pt2Model
from imgcls.errors import ImgclsError
from imgcls.models import load_model
from imgcls.predict import Predictor


@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_export_matches_pytorch_and_predictor_runs_it(trained, cache, tmp_path, fmt):
    ckpt, root, _ = trained
    r = export(ckpt, fmt, tmp_path / f"m.{fmt}")
    assert r.path.is_file() and r.parity.passed
    assert r.parity.images == 256 and r.parity.max_abs_diff < 1e-4 and r.parity.top1_agreement == 1.0
    runtime = OnnxModel(r.path) if fmt == "onnx" else Pt2Model(r.path)
    assert runtime.meta.classes == load_model(ckpt).meta.classes
    assert runtime.parity["passed"] and runtime.parity["images"] == 256
    # the same predictions, scores and output shape through Predictor, for one image and several
    files = sorted((root / "test" / "red").glob("*.png"))[:5]
    a, b = Predictor.load(ckpt, device="cpu"), Predictor.load(r.path, device="cpu")
    pa, pb = a.predict([str(f) for f in files], top_k=3), b.predict([str(f) for f in files], top_k=3)
    assert [p["label"] for p in pa] == [p["label"] for p in pb]
    for x, y in zip(pa, pb):
        assert len(y["top_k"]) == 3 and y["score"] == pytest.approx(x["score"], abs=1e-5)
    assert b.predict(str(files[0]))["label"] == pa[0]["label"]
    logits = b.logits([b._to_pil(str(f)) for f in files])
    assert logits.shape == (5, 3)


def test_onnx_file_carries_metadata(trained, cache, tmp_path):
    ckpt, _, _ = trained
    path = export(ckpt, "onnx", tmp_path / "m.onnx").path
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    meta = json.loads(props[META_KEY])
    assert meta["classes"] == ["blue", "green", "red"] and meta["preprocess"]["input_size"] == [12, 12]
    assert json.loads(props[PARITY_KEY])["top1_agreement"] == 1.0


def test_export_refusals(trained, cache, tmp_path):
    ckpt, root, _ = trained
    out = tmp_path / "m.onnx"
    export(ckpt, "onnx", out, images=root / "test" / "blue")
    before = out.read_bytes()
    with pytest.raises(ImgclsError, match="exists; pass overwrite=true"):
        export(ckpt, "onnx", out)
    assert out.read_bytes() == before  # nothing overwritten
    with pytest.raises(ImgclsError, match="format='tflite'"):
        export(ckpt, "tflite")
    with pytest.raises(ImgclsError, match="should end in .onnx"):
        export(ckpt, "onnx", tmp_path / "m.pt2")
    with pytest.raises(ImgclsError, match="images=.*no such file"):
        export(ckpt, "onnx", tmp_path / "x.onnx", images=tmp_path / "nothing")
    # beyond tolerance: a loud failure, and the export kept aside to inspect
    with pytest.raises(ImgclsError, match="disagrees with the PyTorch model.*top-1 agreement"):
        export(ckpt, "onnx", tmp_path / "strict.onnx", min_agreement=1.01)
    assert not (tmp_path / "strict.onnx").exists() and (tmp_path / "strict.failed.onnx").is_file()


def test_onnx_without_metadata_is_refused(tmp_path):
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2)).eval()
    path = tmp_path / "plain.onnx"
    torch.onnx.export(net, (torch.randn(2, 3, 2, 2),), str(path), dynamo=True)
    with pytest.raises(ImgclsError, match="without imgcls metadata"):
        Predictor.load(path, device="cpu")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ImgclsError, match="junk.onnx is not a model onnxruntime can load"):
        Predictor.load(tmp_path / "junk.onnx", device="cpu")


@pytest.mark.parametrize("mode", ["static", "dynamic"])
def test_quantized_accuracy_within_a_point(trained, cache, tmp_path, mode):
    ckpt, _, _ = trained
    fp32 = export(ckpt, "onnx", tmp_path / "m.onnx").path
    r = quantize(fp32, mode, tmp_path / f"m.{mode}.onnx", speed_seconds=0.2, batch=64)
    assert r.images == 1002
    assert abs(r.int8_top1 - r.fp32_top1) <= 0.01 and r.top1_agreement >= 0.98
    assert r.fp32_speed.images_per_second > 0 and r.int8_speed.latency_ms_p50 > 0
    p = Predictor.load(r.path, device="cpu")  # the int8 model keeps the metadata
    assert p.classes == ["blue", "green", "red"]
    ops = {n.op_type for n in onnx.load(str(r.path)).graph.node}
    assert ("QuantizeLinear" in ops) if mode == "static" else ({"ConvInteger", "MatMulInteger", "DynamicQuantizeLinear"} & ops)
    if mode == "static":  # the first layer stays in fp32 by default: its weight is a float initializer, not dequantized
        graph = onnx.load(str(r.path)).graph
        first = first_layer(fp32)
        conv = next(n for n in graph.node if n.op_type == "Conv" and n.name == first[0])
        dequantized = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
        assert conv.input[1] not in dequantized and conv.input[1] in {t.name for t in graph.initializer}
        others = [n for n in graph.node if n.op_type == "Conv" and n.name != first[0]]
        assert others and all(n.input[1] in dequantized for n in others)  # ... and the other convs are int8


def test_prune_sets_the_share_of_weights_to_zero(trained, cache, tmp_path):
    ckpt, _, _ = trained
    r = prune_model(ckpt, 0.6, tmp_path / "p.safetensors", finetune_epochs=1, lr=0.01, batch_size=16, device="cpu",
                    progress=False)
    assert r.sparsity == pytest.approx(0.6, abs=0.01) and r.params_pruned > 0
    model = load_model(r.path)
    params = prunable(model)
    zeros = sum(int((m.weight == 0).sum()) for m, _ in params)
    assert zeros == r.params_pruned  # the zeros survived fine-tuning and saving
    assert not any(n.endswith("_orig") or n.endswith("_mask") for n, _ in model.named_parameters())
    assert model.meta.metrics["pruning"]["amount"] == 0.6
    assert 0 <= r.top1_pruned <= 1 and r.top1_finetuned is not None and r.images == 1002
    assert r.gzip_bytes_after < r.gzip_bytes_before
    with pytest.raises(ImgclsError, match="amount=1.5"):
        prune_model(ckpt, 1.5)
    with pytest.raises(ImgclsError, match="exists"):
        prune_model(ckpt, 0.5, r.path)


def test_a_pt2_with_a_malicious_pickle_is_refused_and_runs_nothing(trained, cache, tmp_path):
    import io
    import zipfile

    good = export(trained[0], "pt2", tmp_path / "m.pt2").path
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))  # unpickling this would create the marker file

    buf = io.BytesIO()
    torch.save(Payload(), buf)
    evil = tmp_path / "evil.pt2"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(evil, "w") as dst:
        config_name = next(n for n in src.namelist() if n.endswith("data/weights/model_weights_config.json"))
        config = json.loads(src.read(config_name))
        first = next(iter(config["config"].values()))
        first["use_pickle"] = True  # the archive now says: this weight is a pickle (torch.load(weights_only=False))
        target = config_name.rsplit("/", 1)[0] + "/" + first["path_name"]
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == config_name:
                data = json.dumps(config).encode()
            elif item.filename == target:
                data = buf.getvalue()
            dst.writestr(item, data)
    with pytest.raises(ImgclsError, match="refused to load .*evil.pt2"):
        Predictor.load(evil, device="cpu")
    assert not marker.exists()
