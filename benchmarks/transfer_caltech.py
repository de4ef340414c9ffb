"""Transfer learning on the Caltech101 subset: from scratch vs from a CIFAR-10 model file, same wall budget.

    python benchmarks/transfer_caltech.py --source runs/bench/cifar10_mobilenet20-seed0/best.safetensors --seeds 0

Variants, each `experiment=caltech101_small` (32x32, 240 s of wall time from process start, test = a
stratified 20% held out): `scratch`; `finetune` (the CIFAR-10 weights, head replaced, one head-only
epoch, then all layers with discriminative lrs, lr_mult=10); `features` (the backbone frozen: only
a new head trains); and `finetune_balanced` (finetune with loss.class_weights=balanced, for the
per-class effect on this unbalanced subset: 50 to 239 images a class). Results go to
benchmarks/results/transfer_caltech.json (one row per variant and seed, with per-class recall) and
a markdown table next to it. Needs IMGCLS_DATA (or data.root=...) to hold the caltech101 subset.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.cifar10_speed import cpu_name, run_seed, warm_cache  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "transfer_caltech.json"


def variants(source: str, arch: str, arch_args: dict) -> dict[str, list[str]]:
    model = [f"model={arch}", *(f"model.{k}={json.dumps(v)}" for k, v in arch_args.items()
                                if k not in ("num_classes", "in_chans", "img_size"))]  # the source's own shape
    pre = [*model, f"model.pretrained={source}"]
    return {
        "scratch": model,
        "finetune": [*pre, "trainer.freeze_epochs=1", "optim.lr_mult=10"],
        "features": [*pre, "model.freeze=backbone"],
        "finetune_balanced": [*pre, "trainer.freeze_epochs=1", "optim.lr_mult=10", "loss=balanced"],
    }


def per_class(run_dir: str) -> dict[str, float]:
    with open(Path(run_dir) / "per_class.csv", newline="") as f:
        return {r["class"]: float(r["recall"]) for r in csv.DictReader(f)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", required=True, help="an imgcls model file trained on CIFAR-10")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--only", nargs="*", default=None, help="variants to run (default: all)")
    ap.add_argument("--project", default="runs/bench")
    ap.add_argument("overrides", nargs="*", help="extra key=value overrides for every variant (after --)")
    a = ap.parse_args()
    from imgcls.modelfile import read_meta

    meta = read_meta(a.source)
    arch = meta.arch
    rows = json.loads(OUT.read_text()) if OUT.exists() else []
    warm_cache("caltech101_small", a.overrides)
    for name, extra in variants(a.source, arch, meta.arch_args).items():
        if a.only and name not in a.only:
            continue
        for seed in a.seeds:
            if any(r["variant"] == name and r["seed"] == seed and r["source"] == a.source for r in rows):
                continue
            r = run_seed("caltech101_small", seed, [*extra, *a.overrides], a.project)
            rows.append({"variant": name, "seed": seed, "source": a.source, "arch": arch, "overrides": [*extra, *a.overrides],
                         "test_acc": r["test_acc"], "wall_seconds": r["wall_seconds"], "epochs": r["epochs"],
                         "per_class_recall": per_class(r["run_dir"]), "run_dir": r["run_dir"],
                         "hardware": f"{cpu_name()}, {os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d")})
            OUT.write_text(json.dumps(rows, indent=2))
            print(f"{name} seed {seed}: test acc {r['test_acc']:.2%} in {r['wall_seconds']:.0f}s ({r['epochs']} epochs)", flush=True)
    write_table(rows)


def write_table(rows: list[dict]) -> None:
    names = list(dict.fromkeys(r["variant"] for r in rows))
    classes = list(rows[0]["per_class_recall"]) if rows else []
    lines = [f"Caltech101 subset (12 classes, 32x32), test = 20% stratified hold-out; {rows[0]['hardware'] if rows else ''}", "",
             "| variant | seeds | test acc % | epochs | wall s | macro recall % | worst class recall % |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for n in names:
        rs = [r for r in rows if r["variant"] == n]
        acc = [100 * r["test_acc"] for r in rs]
        rec = [statistics.mean(r["per_class_recall"].values()) * 100 for r in rs]
        worst = [min(r["per_class_recall"].values()) * 100 for r in rs]
        sd = statistics.stdev(acc) if len(acc) > 1 else 0.0
        lines.append(f"| {n} | {len(rs)} | {statistics.mean(acc):.1f} ± {sd:.1f} | {statistics.mean(r['epochs'] for r in rs):.0f} | "
                     f"{statistics.mean(r['wall_seconds'] for r in rs):.0f} | {statistics.mean(rec):.1f} | {statistics.mean(worst):.1f} |")
    lines += ["", "Per-class recall % (mean over seeds):", "",
              "| class | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for c in classes:
        vals = [statistics.mean(r["per_class_recall"][c] for r in rows if r["variant"] == n) * 100 for n in names]
        lines.append(f"| {c} | " + " | ".join(f"{v:.0f}" for v in vals) + " |")
    text = "\n".join(lines)
    print(text)
    OUT.with_suffix(".md").write_text(text + "\n")


if __name__ == "__main__":
    main()
