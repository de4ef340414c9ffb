"""Determinism (identical reruns) and crash safety (SIGKILL at random points, resume, same result)."""

from __future__ import annotations

import csv
import multiprocessing
import os
import random
import shutil
import signal
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from imgcls.errors import ImgclsError
from imgcls.training.run import train
from tests.conftest import write_image_folder

CNN = {"name": "simple_cnn", "width": 4}


def run_cfg(root: Path, project: Path, name: str, epochs: int, **trainer) -> dict:
    return dict(data={"name": "folder", "root": str(root), "val_fraction": 0.2},
                model=CNN, optim={"lr": 0.05}, aug={"flip": True, "crop_pad": 2},
                trainer={"epochs": epochs, "batch_size": 8, "project": str(project), "name": name, "progress": False,
                         "threads": 1, "device": "cpu", "deterministic": True, "ema_decay": 0.9, **trainer})


def rows(run: Path) -> list[dict]:
    with open(run / "results.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]


def same_tensors(a: Path, b: Path) -> None:
    ta, tb = load_file(str(a)), load_file(str(b))
    assert ta.keys() == tb.keys()
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k


def test_deterministic_reruns_are_identical(tmp_path, image_folder):
    root = image_folder(n_train=10, n_test=4, size=12)
    a = train(**run_cfg(root, tmp_path, "a", 3))
    b = train(**run_cfg(root, tmp_path, "b", 3))
    same_tensors(a.last, b.last)
    assert rows(a.run_dir) == rows(b.run_dir) and len(rows(a.run_dir)) == 3
    assert a.metrics["top1"] == b.metrics["top1"]
    assert not torch.are_deterministic_algorithms_enabled()  # the flag was this run's: the process is as before
    with pytest.raises(ImgclsError, match="deterministic=true cannot be combined with trainer.time_budget"):
        train(**run_cfg(root, tmp_path, "c", 3, time_budget=60))


def _noop() -> None:
    pass


def _child(cfg: dict) -> None:
    torch.set_num_threads(1)
    try:
        train(**cfg)
    except BaseException:  # noqa: BLE001 - the harness reads the exit code
        os._exit(1)
    os._exit(0)


def test_sigkill_at_random_points_then_resume_gives_the_unbroken_result(tmp_path, monkeypatch):
    """Kill training 10 times at seeded random moments; each time resume; compare with an unbroken run."""
    root = write_image_folder(tmp_path / "data", n_train=24, n_test=6, size=16)
    monkeypatch.setenv("IMGCLS_CACHE", str(tmp_path / "cache"))
    project, epochs = tmp_path / "runs", 16
    # forkserver, not fork: a fork of the pytest process copies its other threads' locks (pytest-xdist's
    # execnet threads write to stdout), and a child that prints could wait forever on one of them
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["imgcls.training.run", "tests.training.test_reliability"])
    warm = ctx.Process(target=_noop)  # starts the server (its imports) before the clock below: kill points need the run's own time
    warm.start()
    warm.join(timeout=300)
    t0 = time.perf_counter()  # the unbroken run in a child process too: each run alike, but for the kills
    p = ctx.Process(target=_child, args=(run_cfg(root, project, "unbroken", epochs),))
    p.start()
    p.join(timeout=300)
    assert p.exitcode == 0
    duration = time.perf_counter() - t0
    ref_dir = project / "unbroken"
    run = project / "crashy"
    rng = random.Random(20261123)
    kills = 0
    while True:
        has_state = (run / "state.safetensors").is_file()
        if run.exists() and not has_state:  # killed before its first epoch ended: nothing to keep
            shutil.rmtree(run)
        p = ctx.Process(target=_child, args=(run_cfg(root, project, "crashy", epochs, resume=has_state),))
        p.start()
        if kills < 10:  # kill points spread so that 10 kills come before the end (each resume redoes part of an epoch)
            p.join(timeout=rng.uniform(0.05, duration / 8))
            if p.is_alive():
                os.kill(p.pid, signal.SIGKILL)
                p.join()
                kills += 1
                continue
        p.join(timeout=300)
        assert p.exitcode == 0, f"the run failed after {kills} kills (exit code {p.exitcode})"
        break
    assert kills == 10
    got = rows(run)
    assert [r["epoch"] for r in got] == [str(e) for e in range(1, epochs + 1)]  # no epoch missing or doubled
    assert got == rows(ref_dir)
    same_tensors(run / "last.safetensors", ref_dir / "last.safetensors")
    same_tensors(run / "best.safetensors", ref_dir / "best.safetensors")
    import json

    assert json.loads((run / "metrics.json").read_text())["top1"] == json.loads((ref_dir / "metrics.json").read_text())["top1"]
    assert not list(run.glob("*.tmp"))  # half-written files of killed sessions were cleaned up on resume
