"""The fast recipe's parts learn real CIFAR-10: a narrow fastnet, a few dozen steps, well above chance."""

from __future__ import annotations

import pytest

from imgcls.training.run import train

pytestmark = pytest.mark.integration


def test_narrow_fastnet_learns_cifar10_subset(data_root, tmp_path, real_data_cache):
    if not (data_root / "cifar10" / "train").is_dir():
        pytest.skip(f"CIFAR-10 image folders not found under {data_root}/cifar10")
    r = train(
        data={"name": "cifar10", "root": str(data_root), "val_fraction": 0, "limit": 2500, "download": False,
              "cache_dir": real_data_cache},
        model={"name": "fastnet", "widths": [16, 32, 32]},
        optim={"name": "muon", "lr": 0.5, "bias_lr_scale": 0.1, "momentum": 0.85, "weight_decay": 0.004,
               "weight_decay_per_step": True, "decay_norms": True, "muon_lr": 0.24, "stop": {"whiten.bias": 0.375}},
        sched={"name": "linear", "warmup": 0.0},
        aug={"flip_mode": "alternate", "crop_pad": 2},
        trainer={"epochs": 8, "batch_size": 128, "eval_batch_size": 1000, "label_smoothing": 0.2, "tta": 1,
                 "project": str(tmp_path), "progress": False, "threads": 2},
    )
    steps = sum(1 for _ in r.history) * (2500 // 128)
    assert steps >= 24  # "a few dozen steps"
    assert r.metrics["num_samples"] == 2500  # the test subset
    assert r.metrics["top1"] > 0.35, r.metrics["top1"]  # chance is 0.10
    assert "test_top1_no_tta" in r.metrics["summary"]
