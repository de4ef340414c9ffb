"""Published CIFAR-10 ResNets (He et al. 2016, trained by Y. Idelbayev) score exactly their published accuracy.

This checks three things at once against numbers nobody here chose: the option-A ResNet definition,
the foreign-weights loader (`module.` prefixes, a nested "state_dict"), and the evaluation pipeline
(decoding, normalization, class order, top-1). CI checks ResNet-20; the deeper three take minutes
on a 2-core CPU and are checked by `benchmarks/pretrained_resnets.py` (same weights, same assertion).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from imgcls.config import DataConfig
from imgcls.data import load_data
from imgcls.evaluation.run import evaluate_model
from imgcls.models import create_model
from imgcls.models.pretrained import load_pretrained

pytestmark = pytest.mark.integration

PUBLISHED = {20: 0.9173, 32: 0.9263, 44: 0.9310, 56: 0.9339}  # test top-1, ../shared/README.md
NORM = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}  # what these weights were trained with


@pytest.fixture(scope="module")
def cifar10_test(real_data_cache):
    root = os.environ.get("IMGCLS_DATA")
    if not root or not (Path(root) / "cifar10" / "test").is_dir():
        pytest.skip("IMGCLS_DATA with cifar10/test/ not set: published-weights check skipped")
    return load_data(DataConfig(name="cifar10", root=root, val_fraction=0, download=False, cache_dir=real_data_cache,
                                **NORM))


def weights_dir() -> Path:
    """$IMGCLS_WEIGHTS, else a `weights/` folder beside the data root (the shared layout)."""
    env = os.environ.get("IMGCLS_WEIGHTS")
    if env:
        return Path(env) / "resnet_cifar"
    return Path(os.environ.get("IMGCLS_DATA", ".")).parent / "weights" / "resnet_cifar"


@pytest.mark.parametrize("depth", [20])
def test_published_resnet_scores_its_published_accuracy(depth, cifar10_test, tmp_path):
    files = sorted(weights_dir().glob(f"resnet{depth}-*.th"))
    if not files:
        pytest.skip(f"no resnet{depth}-*.th in {weights_dir()} (set IMGCLS_WEIGHTS)")
    torch.set_num_threads(2)  # the autouse fixture restores one thread afterwards
    net = create_model(f"resnet_cifar{depth}", num_classes=10)
    report = load_pretrained(net, files[0])
    assert not report.missing and not report.mismatched and not report.unexpected, report.summary()
    m = evaluate_model(net, cifar10_test, "test", tmp_path, device=torch.device("cpu"), batch_size=500)
    assert m["num_samples"] == 10_000
    assert round(m["top1"], 4) == PUBLISHED[depth]
