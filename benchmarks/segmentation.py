"""Semantic segmentation on COCO128 in 10 minutes of CPU: `experiment=segment_finetune` over seeds.

    python benchmarks/segmentation.py --classes person --seeds 0 1 2   # person vs rest
    python benchmarks/segmentation.py --classes all --seeds 0          # every class of the masks

Needs IMGCLS_DATA (coco128/semantic_segmentation: 100 train + 100 val photos with masks) and
IMGCLS_WEIGHTS (imagenet/mobilenet_v2-imagenet-fp32.pth, the encoder's ImageNet weights). Each seed is
`imgcls train experiment=segment_finetune data.root=... model.pretrained=... trainer.seed=S` as its own
process (wall time from process start: the 600 s time budget counts imports and data loading). The val
split is what the masks' config.yaml calls val (COCO val2017): the best epoch is chosen on it by val
mIoU and scored on it, so the last epoch's val mIoU (chosen by nothing) is recorded beside it.
Appends each seed to benchmarks/results/segmentation.json with the CPU, its flags and the curve.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from cifar10_speed import cpu_flags, cpu_name  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "segmentation.json"


def run(classes: str, seed: int, project: Path, extra: list[str]) -> dict:
    data = Path(os.environ["IMGCLS_DATA"]) / "coco128" / "semantic_segmentation"
    weights = Path(os.environ["IMGCLS_WEIGHTS"]) / "imagenet" / "mobilenet_v2-imagenet-fp32.pth"
    model = next((e.split("=", 1)[1] for e in extra if e.startswith("model=")), "deeplabv3plus")
    name = f"coco128-{classes}-{model}-seed{seed}" if model != "deeplabv3plus" else f"coco128-{classes}-seed{seed}"
    cmd = [sys.executable, "-m", "imgcls", "train", "experiment=segment_finetune", f"data.root={data}",
           f"model.pretrained={weights}", f"trainer.seed={seed}", f"trainer.project={project}", f"trainer.name={name}",
           "trainer.progress=false", *(["data.merge=[person]"] if classes == "person" else []), *extra]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{name} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    run_dir = Path(re.findall(r"^run folder: (.+)$", p.stdout, flags=re.M)[-1])
    return record(run_dir, classes, seed, " ".join(cmd[1:]), wall)


def record(run_dir: Path, classes: str, seed: int, command: str, wall: float | None) -> dict:
    """A finished run's row: its metrics, profile, curve and the machine (wall: seconds from process start)."""
    from imgcls.modelfile import read_meta

    m = json.loads((run_dir / "metrics.json").read_text())
    model = read_meta(run_dir / "best.safetensors").arch
    prof = json.loads((run_dir / "profile.json").read_text())
    curve = [{k: float(v) for k, v in r.items() if v != ""} for r in csv.DictReader(open(run_dir / "results.csv"))]
    return {"classes": classes, "model": model, "seed": seed, "command": command, "wall_seconds": None if wall is None else round(wall, 1),
            "train_seconds": prof["training"], "total_seconds": prof["total"], "epochs": len(curve),
            "best_epoch": read_meta(run_dir / "best.safetensors").metrics["epoch"],
            "val_miou": m["miou"], "val_pixel_acc": m["pixel_acc"], "val_mean_dice": m["mean_dice"],
            "last_epoch_val_miou": curve[-1].get("val_miou"),
            "per_class_iou": {c: v["iou"] for c, v in m["per_class"].items()},
            "peak_rss_gb": prof["peak_rss_gb"], "curve": curve, "cpu": cpu_name(), "cpu_flags": cpu_flags(),
            "cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M"), "run_dir": str(run_dir)}


def write_table() -> None:
    """The docs' table: per setting (person vs rest, all classes), mean ± std over its seeds, from the JSON."""
    rows = json.loads(RESULTS.read_text())
    out = ["| classes | model | seeds | val mIoU (best epoch) | val mIoU (last epoch) | person IoU | pixel accuracy | epochs | "
           "wall s (max) | peak RSS GB |", "|---|---|---|---|---|---|---|---|---|---|"]

    def ms(v: list[float], scale: float = 100, fmt: str = "{:.1f}") -> str:
        return fmt.format(statistics.mean(v) * scale) + (" ± " + fmt.format(statistics.stdev(v) * scale) if len(v) > 1 else "")

    groups = sorted({(r["classes"], r.get("model", "deeplabv3plus")) for r in rows},
                    key=lambda g: (g[0] != "person", g[1] != "deeplabv3plus", g[1]))
    for classes, model in groups:
        rs = [r for r in rows if r["classes"] == classes and r.get("model", "deeplabv3plus") == model]
        person = [r["per_class_iou"]["person"] for r in rs if r["per_class_iou"].get("person") is not None]
        label = "person vs rest" if classes == "person" else f"all ({len(rs[0]['per_class_iou'])})"
        out.append(f"| {label} | {model} | {', '.join(str(r['seed']) for r in rs)} | {ms([r['val_miou'] for r in rs])} "
                   f"| {ms([r['last_epoch_val_miou'] for r in rs])} | {ms(person) if person else '-'} "
                   f"| {ms([r['val_pixel_acc'] for r in rs])} | {ms([r['epochs'] for r in rs], 1, '{:.0f}')} "
                   f"| {max(r['wall_seconds'] for r in rs):.0f} | {max(r['peak_rss_gb'] for r in rs):.2f} |")
    cpu = rows[-1]["cpu_flags"]
    out.append(f"\n{cpu}, {rows[-1]['cores']} cores; percentages are mean ± std over the seeds listed.")
    doc = ROOT / "docs" / "segmentation.md"
    text = doc.read_text()
    marker = "<!-- segmentation-table -->"
    head, _, rest = text.partition(marker)
    _, _, tail = rest.partition(marker)
    doc.write_text(head + marker + "\n" + "\n".join(out) + "\n" + marker + tail)
    print("\n".join(out))


def figure(ckpt: Path, photos: tuple[str, ...] = ("000000000139", "000000000632", "000000000785", "000000001000")) -> None:
    """Val photos of COCO128 (not trained on) with the model's mask over them, as docs/images/segmentation/."""
    import numpy as np
    from PIL import Image

    from imgcls.evaluation.plots import plot_image_grid
    from imgcls.predict import Predictor
    from imgcls.tasks.segment.draw import overlay

    val = Path(os.environ["IMGCLS_DATA"]) / "coco128" / "images" / "val2017"
    files = [str(val / f"{p}.jpg") for p in photos if (val / f"{p}.jpg").is_file()]
    pred = Predictor.load(ckpt, device="cpu")
    images, captions = [], []
    for f, r in zip(files, pred.predict(files)):
        photo = Image.open(f).convert("RGB")
        images += [np.asarray(photo), np.asarray(overlay(photo, r["mask"], len(pred.classes)))]
        share = ", ".join(f"{c} {v:.0%}" for c, v in r["pixel_share"].items() if c != pred.classes[0])
        captions += [Path(f).name, share or "nothing found"]
    out = ROOT / "docs" / "images" / "segmentation" / "coco128_val.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    plot_image_grid(images, captions, out, cols=4, title=f"{pred.meta.arch} on COCO128 val photos ({ckpt.parent.name})")
    print(f"figure: {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--classes", choices=["person", "all"], default="person")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--project", default="runs/bench_segmentation")
    ap.add_argument("--figure", metavar="MODEL_FILE", help="only draw docs/images/segmentation/coco128_val.png: the "
                    "masks MODEL_FILE predicts on 4 val photos, beside them")
    ap.add_argument("--table", action="store_true", help="only rewrite the table in docs/segmentation.md from the JSON")
    ap.add_argument("extra", nargs="*", help="more overrides for every run (after --)")
    a = ap.parse_args()
    for k in ("IMGCLS_DATA", "IMGCLS_WEIGHTS"):
        if not os.environ.get(k):
            raise SystemExit(f"set {k} (see the docstring)")
    if a.figure:
        figure(Path(a.figure))
        return
    if a.table:
        write_table()
        return
    rows = json.loads(RESULTS.read_text()) if RESULTS.is_file() else []
    mine = []
    for seed in a.seeds:
        r = run(a.classes, seed, (ROOT / a.project).resolve(), a.extra)
        rows.append(r)
        mine.append(r)
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(rows, indent=1) + "\n")
        person = r["per_class_iou"].get("person")
        print(f"{a.classes} seed {seed}: val mIoU {r['val_miou']:.4f} (last epoch {r['last_epoch_val_miou']:.4f}), "
              f"person IoU {person if person is None else round(person, 4)}, {r['epochs']} epochs, "
              f"{r['wall_seconds']:.0f} s wall", flush=True)
    if len(mine) > 1:
        for key in ("val_miou", "last_epoch_val_miou", "wall_seconds"):
            v = [r[key] for r in mine]
            print(f"{key}: {statistics.mean(v):.4f} ± {statistics.stdev(v):.4f} (n={len(v)})")
        p = [r["per_class_iou"].get("person") for r in mine if r["per_class_iou"].get("person") is not None]
        if len(p) > 1:
            print(f"person IoU: {statistics.mean(p):.4f} ± {statistics.stdev(p):.4f}")


if __name__ == "__main__":
    main()
