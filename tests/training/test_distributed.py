"""Two CPU processes (torchrun, gloo) end where one process ends, at the same global batch."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from imgcls.data.tensor_loader import TensorLoader
from imgcls.training.run import train
from tests.conftest import write_image_folder

# No dropout and no augmentation: then the two runs compute the same batches and gradients, and
# differ only by the order of floating-point sums (stated tolerance below).
OVERRIDES = ["data=folder", "data.val_fraction=0.25", "model=mlp", "model.hidden=[32]", "model.dropout=0",
             "aug=none", "optim.lr=0.05", "trainer.epochs=3", "trainer.batch_size=8", "trainer.progress=false",
             "trainer.threads=1", "trainer.device=cpu", "trainer.deterministic=true"]


def results(run: Path) -> list[dict]:
    with open(run / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_sharded_loader_slices_the_global_batch():
    images = torch.arange(20, dtype=torch.uint8).view(20, 1, 1, 1).expand(20, 1, 2, 2).contiguous()
    labels = torch.arange(20)
    kw = dict(batch_size=8, mean=[0.0], std=[1 / 255], shuffle=True, seed=3)
    one = [y for _, y in TensorLoader(images, labels, drop_last=True, **kw)]
    parts = [[y for _, y in TensorLoader(images, labels, rank=r, world=2, **kw)] for r in (0, 1)]
    assert len(parts[0]) == len(parts[1]) == len(one) == 2
    for i, batch in enumerate(one):  # rank 0 has the first half of each global batch, rank 1 the second
        assert torch.equal(torch.cat([parts[0][i], parts[1][i]]), batch)
    evals = [torch.cat([y for _, y in TensorLoader(images, labels, batch_size=3, mean=[0.0], std=[1.0], rank=r,
                                                   world=2)]) for r in (0, 1)]
    assert torch.equal(torch.cat(evals), labels)  # contiguous blocks, in rank order


def torchrun(tmp_path: Path, processes: int, *overrides: str) -> subprocess.CompletedProcess:
    """`torchrun --nproc_per_node=N -m imgcls train OVERRIDES ...` on CPUs; it must succeed."""
    env = {**os.environ, "IMGCLS_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", "-m", "imgcls",
           "train", *OVERRIDES, *overrides, f"trainer.project={tmp_path / 'runs'}"]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p


def test_two_processes_match_one(tmp_path):
    root = write_image_folder(tmp_path / "data", n_train=12, n_test=4, size=8)
    p = torchrun(tmp_path, 2, f"data.root={root}", "trainer.name=two")
    assert p.stdout.count("training mlp on folder") == 1 and "with 2 processes" in p.stdout  # rank 0 alone talks
    runs = sorted((tmp_path / "runs").iterdir())
    assert [r.name for r in runs] == ["two"]  # one run folder, written by rank 0
    from imgcls.cli import compose_train

    groups = compose_train(OVERRIDES + [f"data.root={root}", f"trainer.project={tmp_path / 'runs'}", "trainer.name=one"])
    one = train(**groups)
    a, b = results(one.run_dir), results(tmp_path / "runs" / "two")
    assert [r["epoch"] for r in a] == [r["epoch"] for r in b] == ["1", "2", "3"]
    for ra, rb in zip(a, b):  # tolerance: float sums in another order
        for k in ("train_loss", "train_acc", "val_loss", "val_acc"):
            assert float(ra[k]) == pytest.approx(float(rb[k]), abs=1e-4), (k, ra, rb)
    m_two = json.loads((tmp_path / "runs" / "two" / "metrics.json").read_text())
    assert m_two["top1"] == pytest.approx(one.metrics["top1"], abs=1e-6)


def test_sync_batchnorm_swaps_layers_keeps_parameters_and_refuses_cpu():
    from torch import nn

    from imgcls.errors import ImgclsError
    from imgcls.training.distributed import sync_batchnorm

    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Sequential(nn.BatchNorm2d(4)))
    params = [id(p) for p in net.parameters()]
    keys = list(net.state_dict())
    synced = sync_batchnorm(net, torch.device("cuda"))  # converting needs no GPU; running it does
    kinds = [type(m) for m in synced.modules()]
    assert kinds.count(nn.SyncBatchNorm) == 2 and nn.BatchNorm2d not in kinds
    assert [id(p) for p in synced.parameters()] == params  # the optimizer built afterwards sees the same tensors
    assert list(synced.state_dict()) == keys  # model files load into plain batch norm
    with pytest.raises(ImgclsError, match="sync_batchnorm=true needs GPUs"):
        sync_batchnorm(net, torch.device("cpu"))


def test_torchrun_with_one_process_joins_a_group(tmp_path):
    """`torchrun --nproc_per_node=1` (one GPU's case) runs the distributed path, not the plain one."""
    root = write_image_folder(tmp_path / "data", n_train=8, n_test=4, size=8)
    p = torchrun(tmp_path, 1, "trainer.epochs=1", f"data.root={root}", "trainer.name=one")
    assert "with 1 process (gloo)" in p.stdout
    assert (tmp_path / "runs" / "one" / "metrics.json").is_file()
