"""Published CIFAR-10 ResNets through `model.pretrained`: do they score their published accuracy here?

    python benchmarks/pretrained_resnets.py --weights DIR [--data ROOT]

DIR holds Y. Idelbayev's `resnet{20,32,44,56}-*.th` (He et al. 2016, option-A shortcuts); ROOT (default
$IMGCLS_DATA) holds CIFAR-10. Each model is evaluated on the 10,000 test images with the
normalization it was trained with, and compared with its published top-1. CI checks ResNet-20 only
(tests/integration/test_pretrained_resnets.py); the deeper three take minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from imgcls.config import DataConfig
from imgcls.data import load_data
from imgcls.evaluation.run import evaluate_model
from imgcls.models import create_model
from imgcls.models.pretrained import load_pretrained

PUBLISHED = {20: 0.9173, 32: 0.9263, 44: 0.9310, 56: 0.9339}  # test top-1 (the weights' README)
NORM = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}  # what these weights were trained with


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", required=True, help="folder with resnet{20,32,44,56}-*.th")
    ap.add_argument("--data", default=os.environ.get("IMGCLS_DATA"), help="data root holding cifar10/ (default $IMGCLS_DATA)")
    a = ap.parse_args()
    if not a.data:
        raise SystemExit("pass --data ROOT or set IMGCLS_DATA")
    bundle = load_data(DataConfig(name="cifar10", root=a.data, val_fraction=0, download=False, **NORM))
    print("| model | published top-1 | measured top-1 | match | seconds |\n| --- | --- | --- | --- | --- |")
    for depth, published in PUBLISHED.items():
        files = sorted(Path(a.weights).glob(f"resnet{depth}-*.th"))
        if not files:
            print(f"| resnet_cifar{depth} | {published:.2%} | no weights file in {a.weights} | | |")
            continue
        net = create_model(f"resnet_cifar{depth}", num_classes=10)
        load_pretrained(net, files[0])
        t = time.perf_counter()
        with tempfile.TemporaryDirectory() as out:
            top1 = evaluate_model(net, bundle, "test", Path(out), device=torch.device("cpu"), batch_size=500)["top1"]
        print(f"| resnet_cifar{depth} | {published:.2%} | {top1:.2%} | {'yes' if round(top1, 4) == published else 'NO'} "
              f"| {time.perf_counter() - t:.0f} |", flush=True)


if __name__ == "__main__":
    main()
