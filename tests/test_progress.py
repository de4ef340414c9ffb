"""Progress bars: one switch for every verb (a terminal by default, IMGCLS_PROGRESS, or the option)."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

import imgcls
from imgcls.evaluation.infer import predict_logits
from imgcls.progress import show_progress


def test_the_switch_explicit_then_environment_then_terminal(monkeypatch):
    monkeypatch.delenv("IMGCLS_PROGRESS", raising=False)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    assert show_progress(None) is False and show_progress(True) is True
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert show_progress(None) is True and show_progress(False) is False
    monkeypatch.setenv("IMGCLS_PROGRESS", "0")
    assert show_progress(None) is False and show_progress(True) is True
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    monkeypatch.setenv("IMGCLS_PROGRESS", "1")
    assert show_progress(None) is True


@pytest.mark.parametrize("env", ["1", "0"])
def test_evaluation_training_and_doctor_draw_bars_only_when_switched_on(env, monkeypatch, capsys, image_folder, tmp_path):
    monkeypatch.setenv("IMGCLS_PROGRESS", env)
    loader = [(torch.randn(4, 3), torch.tensor([0, 1, 0, 1]))] * 3
    predict_logits(nn.Linear(3, 2), loader, device=torch.device("cpu"), desc="evaluate test")
    root = image_folder()
    imgcls.train(data={"name": "folder", "root": str(root)}, model={"name": "mlp", "hidden": [8]},
                 trainer={"epochs": 1, "batch_size": 8, "device": "cpu", "project": str(tmp_path)})
    from imgcls.data.doctor import doctor

    doctor({"name": "folder", "root": str(root)}, out_dir=tmp_path / "doc", use_cache=False)
    err = capsys.readouterr().err
    for bar in ("evaluate test", "epoch 1/1", "doctor: reading files"):
        assert (bar in err) == (env == "1"), bar
