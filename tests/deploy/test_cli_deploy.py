"""The deploy verbs from the command line (in this process: Hydra composes, the verbs print)."""

from __future__ import annotations

import pytest

import imgcls.cli as cli
from imgcls.predict import Predictor


def run(capsys, *argv: str) -> str:
    cli.main(list(argv))
    return capsys.readouterr().out


def test_export_quantize_prune_verbs(trained, cache, tmp_path, capsys):
    ckpt = trained[0]
    out = run(capsys, "export", f"ckpt={ckpt}", f"out={tmp_path / 'm.onnx'}", "check_images=64")
    assert "top-1 agreement 100.00%" in out and "on 64 images" in out and f"export: {tmp_path / 'm.onnx'}" in out
    out = run(capsys, "export", f"ckpt={ckpt}", "format=pt2", f"out={tmp_path / 'm.pt2'}")
    assert Predictor.load(tmp_path / "m.pt2", device="cpu").classes == ["blue", "green", "red"]
    out = run(capsys, "quantize", f"ckpt={tmp_path / 'm.onnx'}", "mode=dynamic", "eval_images=100")
    assert "dynamic int8: top-1" in out and "on 100 images" in out and (tmp_path / "m.int8-dynamic.onnx").is_file()
    out = run(capsys, "prune", f"ckpt={ckpt}", "amount=0.3", f"out={tmp_path / 'p.safetensors'}", "device=cpu")
    assert "sparsity 30.0%" in out and (tmp_path / "p.safetensors").is_file()


def test_verbs_report_bad_input_without_a_traceback(trained, cache, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["export", f"ckpt={trained[0]}", "format=tflite"])
    assert e.value.code == 2 and "error: format='tflite' is not one of: onnx, pt2" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["serve", f"ckpt={tmp_path / 'missing.safetensors'}"])
    assert "no such file" in capsys.readouterr().err
