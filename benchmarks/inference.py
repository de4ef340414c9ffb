"""CPU inference speed of one model by every path imgcls can deploy it: eager, channels_last,
torch.compile, onnxruntime fp32 and int8 (static, first layer kept fp32, and all layers int8).

    python benchmarks/inference.py --ckpt runs/bench/cifar10_cpu10-seed0/best.safetensors
    python benchmarks/inference.py --timm resnet18            # an ImageNet-size backbone (random weights, 224x224)
    python benchmarks/inference.py --table-only               # rewrite docs/deploy.md from the saved results

The CIFAR-10 model file comes from `python benchmarks/cifar10_speed.py --experiment cifar10_cpu10
--seeds 0`. Latency: batch 1, p50 and p95 over 200 calls after a warm-up; throughput: images/s at
batch 256 over at least 5 s (both `imgcls.deploy.quantize.measure_speed`, as `imgcls quantize` reports).
Agreement: share of real test images (2,000 CIFAR-10 test images, or the
Caltech101 subset at 224 for the timm model) whose top-1 class equals eager's; accuracy where the
labels mean something (the CIFAR-10 model). Run it alone on the machine: other work skews every number.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.cifar10_speed import cpu_name  # noqa: E402
from benchmarks.doc_tables import replace_between_markers  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "inference.json"
DOC = ROOT / "docs" / "deploy.md"
MARK = "<!-- inference-table -->"


def predict_all(fn, x: torch.Tensor, batch: int = 250) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([fn(x[i:i + batch]).float() for i in range(0, len(x), batch)]).argmax(1)


def real_images(args):
    """(model, test images, labels or None, calibration images (train split), name, meta)."""
    from imgcls.data import make_loader
    from imgcls.evaluation.run import data_for_model
    from imgcls.models import load_model

    if args.ckpt:
        model = load_model(args.ckpt)
        bundle, _ = data_for_model(model.meta, None, "test")
        g = torch.Generator().manual_seed(0)
        x, y = next(iter(make_loader(bundle, bundle.test, train=False, batch_size=len(bundle.test))))
        idx = torch.randperm(len(y), generator=g)[:args.images]
        calib, _ = next(iter(make_loader(bundle, bundle.train, train=False, batch_size=512)))
        return model, x[idx], y[idx], calib, f"{model.meta.arch} ({Path(args.ckpt).parent.name})", model.meta

    from imgcls.config import DataConfig, ModelConfig
    from imgcls.data import load_data
    from imgcls.models.build import build_model
    from imgcls.setup import preprocess_of

    data = load_data(DataConfig(name="caltech101", image_size=224, mean=[0.485, 0.456, 0.406],
                                std=[0.229, 0.224, 0.225]))
    torch.manual_seed(0)
    model, arch_args, _ = build_model(ModelConfig(name="timm", args={"arch": args.timm}), num_classes=len(data.classes),
                                      in_chans=3, image_size=(224, 224))
    model.eval()
    from imgcls.modelfile import ModelMeta

    model.meta = ModelMeta(arch="timm", arch_args=arch_args, classes=data.classes, preprocess=preprocess_of(data))
    split = data.test if data.test is not None else data.val
    xs = []
    for xb, _ in make_loader(data, split, train=False, batch_size=64):
        xs.append(xb)
        if sum(len(b) for b in xs) >= args.images:
            break
    calib, _ = next(iter(make_loader(data, data.train, train=False, batch_size=256)))
    return model, torch.cat(xs)[:args.images], None, calib, f"timm {args.timm} (random weights, 224x224)", model.meta


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", help="an imgcls model file (the fast CIFAR-10 net)")
    ap.add_argument("--timm", help="a timm model name, built with random weights at 224x224")
    ap.add_argument("--images", type=int, default=2000, help="real images for agreement/accuracy")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--table-only", action="store_true")
    args = ap.parse_args()
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    if not args.table_only:
        if not (args.ckpt or args.timm):
            ap.error("give --ckpt or --timm (or --table-only)")
        results[args.ckpt and "cifar10" or args.timm] = measure(args)
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    write_table(results)


def measure(args) -> dict:
    from imgcls.deploy.export import export_onnx, set_onnx_metadata
    from imgcls.deploy.quantize import measure_speed, quantize_onnx_static
    from imgcls.deploy.runtime import META_KEY, OnnxModel

    torch.set_num_threads(os.cpu_count() or 1)
    model, x, y, calib, name, meta = real_images(args)
    one = x[:1]
    big = x.repeat((args.batch + len(x) - 1) // len(x), 1, 1, 1)[:args.batch]
    rows = []
    eager_pred = predict_all(model, x)

    def add(label: str, fn, note: str = "") -> None:
        print(f"{label} ...", flush=True)
        sp = measure_speed(fn, x, batch=args.batch, repeats=200, seconds=120, throughput_seconds=5)
        t = {"p50_ms": sp.latency_ms_p50, "p95_ms": sp.latency_ms_p95, "images_per_second": sp.images_per_second}
        pred = predict_all(fn, x)
        row = {"path": label, **t, "agreement": float((pred == eager_pred).float().mean()), "note": note}
        if y is not None:
            row["accuracy"] = float((pred == y).float().mean())
        rows.append(row)
        print(f"  {row}", flush=True)

    with torch.no_grad():
        add("eager", model)
        cl = model.to(memory_format=torch.channels_last)
        add("channels_last", lambda t: cl(t.contiguous(memory_format=torch.channels_last)))
        model = model.to(memory_format=torch.contiguous_format)
        t0 = time.perf_counter()
        compiled = torch.compile(model, dynamic=False)
        compiled(one), compiled(big)  # compile both shapes before timing
        add("torch.compile", compiled, f"inductor; compiling took {time.perf_counter() - t0:.0f} s")
        cl = model.to(memory_format=torch.channels_last)
        t0 = time.perf_counter()
        compiled_cl = torch.compile(cl, dynamic=False)
        run_cl = lambda t: compiled_cl(t.contiguous(memory_format=torch.channels_last))  # noqa: E731
        run_cl(one), run_cl(big)
        add("torch.compile + channels_last", run_cl, f"inductor; compiling took {time.perf_counter() - t0:.0f} s")
        model = model.to(memory_format=torch.contiguous_format)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "m.onnx"
        export_onnx(model, x[:2], fp32)
        set_onnx_metadata(fp32, {META_KEY: meta.to_json()})
        add("onnxruntime fp32", OnnxModel(fp32))
        for keep_first, label in ((True, "onnxruntime int8 (static, first layer fp32)"),
                                  (False, "onnxruntime int8 (static, all layers)")):
            q = Path(tmp) / f"q{int(keep_first)}.onnx"
            quantize_onnx_static(fp32, q, calib, keep_first=keep_first)
            add(label, OnnxModel(q))
    eager = rows[0]["images_per_second"]
    for r in rows:
        r["speedup"] = r["images_per_second"] / eager
    return {"model": name, "hardware": f"{cpu_name()}, {os.cpu_count()} cores", "torch": torch.__version__,
            "threads": torch.get_num_threads(), "images": len(x), "batch": args.batch,
            "date": time.strftime("%Y-%m-%d"), "rows": rows}


def write_table(results: dict) -> None:
    parts = []
    for res in results.values():
        acc = any("accuracy" in r for r in res["rows"])
        head = f"| path | p50 ms (batch 1) | p95 ms | images/s (batch {res['batch']}) | vs eager | top-1 agreement |"
        head += " accuracy |" if acc else ""
        lines = [f"**{res['model']}** — {res['hardware']}, torch {res['torch']}, {res['threads']} threads, "
                 f"{res['images']} real images, {res['date']}", "", head, "|---" * (6 + acc) + "|"]
        for r in res["rows"]:
            lines.append(f"| {r['path']} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} | {r['images_per_second']:.0f} | "
                         f"{r['speedup']:.2f}x | {r['agreement']:.2%} |" + (f" {r['accuracy']:.2%} |" if acc else ""))
        notes = [f"{r['path']}: {r['note']}" for r in res["rows"] if r.get("note")]
        parts.append("\n".join(lines + ([""] + [f"- {n}" for n in notes] if notes else [])))
    table = "\n\n".join(parts)
    replace_between_markers(DOC, MARK, table)
    print(table)


if __name__ == "__main__":
    main()
