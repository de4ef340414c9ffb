"""The CUDA path: AMP, channels_last, torch.compile, torchrun over NCCL, export and Predictor on a GPU.

Marked `cuda` and skipped where no GPU is visible (here, and in CI); `benchmarks/gpu_check.sh` runs
them on a GPU machine with `pytest -m cuda tests/test_cuda.py`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import imgcls
from imgcls.data.tensor_loader import TensorLoader
from imgcls.device import amp_dtype, select_device
from imgcls.models import create_model
from tests.conftest import write_image_folder

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (benchmarks/gpu_check.sh)")]

FOLDER = {"name": "folder", "val_fraction": 0.25}
TRAINER = {"epochs": 3, "batch_size": 8, "progress": False, "device": "cuda"}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("cuda") / "data", n_train=16, n_test=6, size=16)


def _train(folder: Path, tmp_path: Path, **trainer) -> imgcls.TrainResult:
    return imgcls.train(data={**FOLDER, "root": str(folder)}, model={"name": "simple_cnn"}, optim={"lr": 0.05},
                        aug={"crop_pad": 2}, trainer={**TRAINER, "project": str(tmp_path / "runs"), **trainer})


def test_auto_picks_cuda_and_bf16():
    assert select_device("auto").type == "cuda"
    dev = torch.device("cuda")
    assert amp_dtype(dev, True) == (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    assert amp_dtype(dev, False) is None


def test_training_with_amp_and_channels_last_learns_and_loads_on_cpu(folder, tmp_path):
    r = _train(folder, tmp_path)  # amp and channels_last default to on for CUDA
    assert r.metrics["top1"] == 1.0  # three colours: easy for any working net
    assert all(h["train_loss"] == h["train_loss"] for h in r.history)  # no NaN under autocast
    gpu, cpu = imgcls.Predictor.load(r.best, device="cuda"), imgcls.Predictor.load(r.best, device="cpu")
    assert gpu.device.type == "cuda"
    files = sorted(str(p) for p in (folder / "test").rglob("*.png"))
    pg, pc = gpu.predict(files, top_k=2), cpu.predict(files, top_k=2)
    assert [p["label"] for p in pg] == [p["label"] for p in pc] == [Path(f).parent.name for f in files]
    for a, b in zip(pg, pc):  # the GPU predictor runs fp32: the same scores up to kernel differences
        assert a["score"] == pytest.approx(b["score"], abs=1e-3)


def test_tensor_loader_on_cuda_gives_the_cpu_batches():
    images = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    labels = torch.arange(64) % 10
    kw = dict(batch_size=16, mean=[0.5] * 3, std=[0.25] * 3, shuffle=True, flip=True, flip_mode="alternate",
              crop_pad=2, seed=5)
    on_gpu = list(TensorLoader(images, labels, device="cuda", channels_last=True, **kw))
    on_cpu = list(TensorLoader(images, labels, device="cpu", **kw))
    for (xg, yg), (xc, yc) in zip(on_gpu, on_cpu, strict=True):
        assert xg.is_cuda and xg.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(yg.cpu(), yc)
        assert torch.allclose(xg.cpu(), xc, atol=1e-5)


def test_channels_last_forward_matches_contiguous():
    net = create_model("fastnet", num_classes=10, widths=[16, 32, 32]).cuda().eval()
    x = torch.randn(8, 3, 32, 32, device="cuda")
    with torch.no_grad():
        ref = net(x)
        got = net.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(ref, got, atol=1e-3, rtol=1e-3)


def test_compiled_fast_recipe_trains_and_saves_plain_weights(tmp_path):
    r = imgcls.train(data={"name": "synthetic", "limit": 2000, "val_fraction": 0}, model={"name": "fastnet", "widths": [16, 32, 32]},
                     optim={"name": "muon", "lr": 10.0}, sched={"name": "linear"}, aug={"flip_mode": "alternate", "crop_pad": 2},
                     trainer={"epochs": 2, "batch_size": 500, "progress": False, "device": "cuda", "compile": True,
                              "tta": 2, "project": str(tmp_path / "runs")})
    assert len(r.history) == 2 and r.history[-1]["train_loss"] == r.history[-1]["train_loss"]
    model = imgcls.load_model(r.best)  # no "_orig_mod." prefix left in the file
    assert not any(k.startswith("_orig_mod") for k in model.state_dict())
    assert 0.0 <= r.metrics["top1"] <= 1.0 and "top1_no_tta" in r.metrics


def test_torchrun_one_gpu_joins_nccl(folder, tmp_path):
    env = {**os.environ, "IMGCLS_CACHE": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", "-m", "imgcls", "train",
           "data=folder", f"data.root={folder}", "data.val_fraction=0.25", "model=simple_cnn", "trainer.epochs=2",
           "trainer.batch_size=8", "trainer.progress=false", "trainer.device=cuda", "trainer.sync_batchnorm=true",
           f"trainer.project={tmp_path / 'runs'}", "trainer.name=nccl"]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "with 1 process (nccl)" in p.stdout
    assert (tmp_path / "runs" / "nccl" / "best.safetensors").is_file()


@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_export_of_a_gpu_model_runs_in_predictor_on_cuda(folder, tmp_path, fmt):
    from imgcls.deploy.export import export

    r = _train(folder, tmp_path, epochs=2)
    exported = export(r.best, fmt, tmp_path / f"m.{fmt}")
    assert exported.parity.passed
    files = sorted(str(p) for p in (folder / "test").rglob("*.png"))
    ref = imgcls.Predictor.load(r.best, device="cpu").predict(files)
    got = imgcls.Predictor.load(exported.path, device="cuda").predict(files)
    assert [p["label"] for p in got] == [p["label"] for p in ref]
    for a, b in zip(got, ref):
        assert a["score"] == pytest.approx(b["score"], abs=1e-3)
