"""The model table of docs/models.md: parameters, multiply-adds, CPU latency and throughput, and the
accuracy and training time measured by the recipe benchmarks.

    python benchmarks/model_zoo.py                 # measure; write benchmarks/results/models.{json,md} and the tables of docs/models.md
    python benchmarks/model_zoo.py --table-only    # rewrite docs/models.md from the saved measurements

Latency: median over 30 calls at batch 1 after 5 warm-up calls; throughput: images/s over 3
batches of 256 after one warm-up batch; eval mode, no gradients, fp32, all cores. Run it alone on the
machine. Accuracy and training time come from the JSON files `benchmarks/cifar10_speed.py`
writes (mean ± std over the seeds there) and from benchmarks/results/transfer_caltech.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.cifar10_speed import cpu_flags  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"

# (label, registered name, builder args, (channels, side), results file, experiment, overrides, command)
ZOO = [
    ("MLP 1024-1024", "mlp", {"hidden": [1024, 1024], "img_size": 28}, (1, 28), "mnist_mlp.json", "mnist_mlp_full", [],
     "imgcls train experiment=mnist_mlp_full"),
    ("MLP 1024-512 (CIFAR-10 study)", "mlp", {"hidden": [1024, 512], "img_size": 32}, (3, 32), None, None, None,
     "imgcls ablate ablation=cifar10 only=[mlp]"),
    ("LeNet-5", "lenet5", {}, (1, 28), None, None, None, "imgcls train data=mnist model=lenet5"),
    ("fastnet 16-32-64 (MNIST CNN)", "fastnet", {"widths": [16, 32, 64]}, (1, 28), "mnist_cnn.json", "mnist_cnn", [],
     "imgcls train experiment=mnist_cnn"),
    ("simple_cnn", "simple_cnn", {}, (3, 32), None, None, None, "imgcls train model=simple_cnn"),
    ("AlexNet (small)", "alexnet_small", {}, (3, 32), None, None, None, "imgcls train model=alexnet_small"),
    ("VGG-11", "vgg", {"depth": 11}, (3, 32), None, None, None, "imgcls train model=vgg model.depth=11"),
    ("ResNet-20", "resnet_cifar20", {}, (3, 32), None, None, None, "imgcls train experiment=cifar10_resnet20"),
    ("ResNet-56", "resnet_cifar56", {}, (3, 32), "cifar10_light.json", "cifar10_20min", ["model=resnet_cifar56"],
     "imgcls train experiment=cifar10_20min model=resnet_cifar56"),
    ("MobileNet v1 1.0", "mobilenet_v1", {}, (3, 32), None, None, None, "imgcls train model=mobilenet_v1"),
    ("MobileNet v1 0.25", "mobilenet_v1", {"width": 0.25}, (3, 32), None, None, None,
     "imgcls train model=mobilenet_v1 model.width=0.25"),
    ("MobileNet v1 0.2", "mobilenet_v1", {"width": 0.2}, (3, 32), "cifar10_light.json", "cifar10_mobilenet20", [],
     "imgcls train experiment=cifar10_mobilenet20"),
    ("MobileNet v2 1.0", "mobilenet_v2", {}, (3, 32), None, None, None, "imgcls train model=mobilenet_v2"),
    ("MobileNet v2 0.25 (last 320)", "mobilenet_v2", {"width": 0.25, "last_channels": 320}, (3, 32), None, None, None,
     "imgcls train model=mobilenet_v2 model.width=0.25 model.last_channels=320"),
    ("fastnet 16-32-64 (CIFAR-10 study)", "fastnet", {"widths": [16, 32, 64]}, (3, 32), None, None, None,
     "imgcls train experiment=cifar10_ablation"),
    ("fastnet 64-128-128 (cifar10_cpu10 before sizing, AVX2-only EPYC)", "fastnet", {"widths": [64, 128, 128]}, (3, 32),
     "cifar10_cpu10_tuning.json", "cifar10_cpu10", ["trainer.tta=1"], "imgcls train experiment=cifar10_cpu10 (at that commit)"),
    ("fastnet 64-256-256 (cifar10_fast, fp32)", "fastnet", {}, (3, 32), "cifar10_fast.json", "cifar10_fast", [],
     "imgcls train experiment=cifar10_fast"),
    ("fastnet 64-256-256 (cifar10_cpu10 sized: bf16, AVX-512 EPYC)", "fastnet", {}, (3, 32), "cifar10_cpu10_sized.json",
     "cifar10_cpu10", [], "imgcls train experiment=cifar10_cpu10"),
    # photos (docs/photos.md): the from-scratch net and the fine-tuned ImageNet net, at the sizes model=auto picks on a CPU
    ("PhotoNet (photo_scratch)", "photonet", {}, (3, 112), "photos_scratch_mmap0.json", "photo_scratch", [],
     "imgcls train experiment=photo_scratch data=caltech101"),
    ("ResNet-20 at photo size", "resnet_cifar20", {}, (3, 112), None, None, None, "imgcls train model=resnet_cifar20"),
    ("torchvision MobileNetV2, ImageNet weights (photo_finetune)", "torchvision", {"arch": "mobilenet_v2"}, (3, 160),
     "photos_mmap0.json", "photo_finetune", [], "imgcls train experiment=photo_finetune data=caltech101"),
]


def measure(name: str, args: dict, chans: int, side: int) -> dict:
    from imgcls.models import create_model

    torch.manual_seed(0)
    net = create_model(name, num_classes=10, in_chans=chans, **args).eval()
    params = sum(p.numel() for p in net.parameters())
    x1 = torch.randn(1, chans, side, side)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        net(x1)
    macs = fc.get_total_flops() / 2
    times = []
    with torch.no_grad():
        for i in range(35):
            t = time.perf_counter()
            net(x1)
            if i >= 5:
                times.append(time.perf_counter() - t)
        xb = torch.randn(256, chans, side, side)
        net(xb)
        t = time.perf_counter()
        for _ in range(3):
            net(xb)
        throughput = 3 * 256 / (time.perf_counter() - t)
    return {"params": params, "macs": macs, "latency_ms": 1000 * statistics.median(times), "throughput": throughput}


def recipe_result(file: str | None, experiment: str | None, overrides: list | None) -> dict | None:
    if not file or not (RESULTS / file).exists():
        return None
    rows = [r for r in json.loads((RESULTS / file).read_text())
            if r["experiment"] == experiment and r["overrides"] == overrides]
    if not rows:
        return None
    acc = [100 * r["test_acc"] for r in rows]
    return {"acc_mean": statistics.mean(acc), "acc_std": statistics.stdev(acc) if len(acc) > 1 else 0.0,
            "wall_mean": statistics.mean(r["wall_seconds"] for r in rows), "seeds": len(rows),
            "data": rows[0].get("data") or ("MNIST" if "mnist" in experiment else "CIFAR-10")}


def table(measured: list[dict]) -> str:
    out = ["| model | input | params | MMACs | latency b=1 (ms) | throughput b=256 (img/s) | test acc % "
           "| wall s (train+eval) | seeds | command |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for m in measured:
        r = m.get("result")
        trained = [f"{r['data']}: {r['acc_mean']:.2f} ± {r['acc_std']:.2f}", f"{r['wall_mean']:.0f}", str(r["seeds"])] \
            if r else ["–", "–", "–"]
        out.append(f"| {m['label']} | {m['chans']}x{m['side']}x{m['side']} | {m['params'] / 1e6:.3f} M | {m['macs'] / 1e6:.1f} | "
                   f"{m['latency_ms']:.2f} | {m['throughput']:.0f} | {' | '.join(trained)} | `{m['command']}` |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table-only", action="store_true", help="no measuring: rebuild the table from models.json")
    a = ap.parse_args()
    path = RESULTS / "models.json"
    if a.table_only:
        saved = json.loads(path.read_text())
    else:
        torch.set_num_threads(os.cpu_count() or 1)
        saved = {"hardware": f"{cpu_flags()}, {os.cpu_count()} cores", "torch": torch.__version__,
                 "date": time.strftime("%Y-%m-%d"), "models": []}
        for label, name, args, (chans, side), *_ , command in ZOO:
            m = measure(name, args, chans, side)
            saved["models"].append({"label": label, "name": name, "args": args, "chans": chans, "side": side,
                                    "command": command, **m})
            print(f"{label}: {m['params'] / 1e6:.3f} M params, {m['macs'] / 1e6:.1f} MMACs, "
                  f"{m['latency_ms']:.2f} ms, {m['throughput']:.0f} img/s", flush=True)
        path.write_text(json.dumps(saved, indent=2))
    for m, (_, _, _, _, file, experiment, overrides, _) in zip(saved["models"], ZOO):
        m["result"] = recipe_result(file, experiment, overrides)
    text = f"Measured on {saved['hardware']}, torch {saved['torch']}, {saved['date']}.\n\n" + table(saved["models"])
    print(text)
    (RESULTS / "models.md").write_text(text + "\n")
    doc = ROOT / "docs" / "models.md"
    if doc.exists():  # the tables between the markers are generated; the prose around them is written by hand
        transfer = RESULTS / "transfer_caltech.md"
        updated = insert(doc.read_text(), "zoo-table", text)
        if transfer.exists():
            updated = insert(updated, "transfer-table", transfer.read_text().strip())
        doc.write_text(updated)


def insert(doc: str, marker: str, text: str) -> str:
    start, end = f"<!-- {marker} -->", f"<!-- /{marker} -->"
    if start not in doc or end not in doc:
        return doc
    head, rest = doc.split(start, 1)
    return f"{head}{start}\n{text}\n{end}{rest.split(end, 1)[1]}"


if __name__ == "__main__":
    main()
