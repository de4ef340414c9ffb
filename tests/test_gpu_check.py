"""benchmarks/gpu_check.sh without a GPU (it must say so and succeed) and the subset it carries to one."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import write_image_folder

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_check_without_a_gpu_says_so_and_exits_0(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""}  # no GPU, even on a machine with one
    p = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(tmp_path / "out")], env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "needs a CUDA GPU" in p.stdout
    assert not (tmp_path / "out").exists()  # nothing ran, nothing written


def test_gpu_check_names_a_python_without_torch(tmp_path):
    env = {**os.environ, "PYTHON": "/bin/false"}
    p = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(tmp_path / "out")], env=env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "cannot import torch" in p.stderr


def test_carried_subset_is_seeded_and_per_class(tmp_path):
    spec = importlib.util.spec_from_file_location("gpu_prepare", ROOT / "benchmarks" / "gpu_prepare.py")
    prep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(prep)
    src = write_image_folder(tmp_path / "src", n_train=6, n_test=3, size=4)
    assert prep.cifar_subset(src, tmp_path / "a", {"train": 2, "test": 1}) == 3 * 3
    assert prep.cifar_subset(src, tmp_path / "b", {"train": 2, "test": 1}) == 9
    a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.png"))
    b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*.png"))
    assert a == b and len([p for p in a if p.parts[0] == "train" and p.parts[1] == "red"]) == 2
    assert prep.cifar_subset(src, tmp_path / "a", {"train": 2, "test": 1}) == 0  # kept, not copied again
