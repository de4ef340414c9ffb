"""A small trained model shared by the deploy tests (export, quantize, prune, serve)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

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




def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def live_server(app):
    """`app` served by uvicorn on a free loopback port in a thread; yields its base URL (ending in /)."""
    import uvicorn

    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not srv.started:
        if time.time() > deadline or not thread.is_alive():
            raise RuntimeError("the server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        srv.should_exit = True
        thread.join(timeout=10)
