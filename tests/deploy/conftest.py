"""A small trained model shared by the deploy tests (export, quantize, prune, serve)."""

from __future__ import annotations

import pytest
import torch

from imgcls.training.run import train
from tests.conftest import write_image_folder


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A small CNN trained on coloured squares, with 1,002 test images (enough to score int8 on 1,000)."""
    base = tmp_path_factory.mktemp("deploy")
    root = write_image_folder(base / "data", n_train=16, n_test=334, size=12)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IMGCLS_CACHE", str(base / "cache"))
        r = train(data={"name": "folder", "root": str(root), "val_fraction": 0},
                  model={"name": "simple_cnn", "width": 8}, optim={"lr": 0.05},
                  trainer={"epochs": 4, "batch_size": 16, "project": str(base / "runs"), "progress": False,
                           "threads": 1, "device": "cpu"})
    torch.set_num_threads(1)
    return r.best, root, base


@pytest.fixture
def cache(trained, monkeypatch):
    monkeypatch.setenv("IMGCLS_CACHE", str(trained[2] / "cache"))


