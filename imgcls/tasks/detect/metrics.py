"""Detection metrics: COCO mAP@[.5:.95], mAP50, per-class AP and recall (torchmetrics' MeanAveragePrecision on
pycocotools, so the numbers are COCO's own), precision-recall curves and the worst images as files."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import torch

from imgcls.atomic import write_text_atomic

WORST_SCORE = 0.3  # detections at or above this score count when ranking the worst images


def map_meter(extended: bool = False):
    """A torchmetrics MeanAveragePrecision (boxes xyxy, pycocotools' evaluation, per-class numbers)."""
    from torchmetrics.detection import MeanAveragePrecision

    return MeanAveragePrecision(box_format="xyxy", iou_type="bbox", class_metrics=True, extended_summary=extended,
                                backend="pycocotools")


def _f(v) -> float | None:
    v = float(v)
    return None if v < 0 else v  # COCO's -1: no ground truth of that kind


def summarize(r: dict, classes: list[str]) -> dict:
    """torchmetrics' result -> plain numbers: map, map_50, map_75, size bands, mar_100, and per class AP, AP50, recall."""
    out = {k: _f(r[k]) for k in ("map", "map_50", "map_75", "map_small", "map_medium", "map_large", "mar_1", "mar_10",
                                 "mar_100") if k in r}
    ids = [int(c) for c in torch.atleast_1d(r["classes"]).tolist()]
    ap = torch.atleast_1d(r["map_per_class"]).tolist()
    rec = torch.atleast_1d(r["mar_100_per_class"]).tolist()
    ap50 = _ap50_per_class(r, ids)
    per = []
    for i, c in enumerate(ids):
        per.append({"class": classes[c] if 0 <= c < len(classes) else str(c), "id": c, "ap": _f(ap[i]) if i < len(ap) else None,
                    "ap50": ap50.get(c), "recall": _f(rec[i]) if i < len(rec) else None})
    out["per_class"] = per
    return out


def _ap50_per_class(r: dict, ids: list[int]) -> dict[int, float | None]:
    """AP at IoU 0.5 per class from the precision table (T, R, K, A, M) of the extended summary (area all, 100 dets)."""
    p = r.get("precision")
    if p is None or not hasattr(p, "ndim") or p.ndim != 5:
        return {}
    out = {}
    for k, c in enumerate(ids):
        if k >= p.shape[2]:
            break
        v = p[0, :, k, 0, -1]
        v = v[v > -1]
        out[c] = float(v.mean()) if len(v) else None
    return out


def pr_curves(r: dict, classes: list[str], path: Path, top: int = 8) -> None:
    """Precision against recall at IoU 0.5 (area all, 100 detections): all classes' mean and the `top` classes
    with most boxes' curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = r.get("precision")
    if p is None or p.ndim != 5:
        return
    ids = [int(c) for c in torch.atleast_1d(r["classes"]).tolist()]
    recall = np.linspace(0, 1, p.shape[1])
    fig, ax = plt.subplots(figsize=(6, 5))
    curves = p[0, :, :, 0, -1].numpy()  # (R, K)
    valid = (curves > -1).all(0)
    if valid.any():
        ax.plot(recall, curves[:, valid].mean(1), color="black", lw=2.5, label=f"mean of {int(valid.sum())} classes")
    counts = r.get("_counts", {})
    order = sorted(range(len(ids)), key=lambda k: -counts.get(ids[k], 0))[:top]
    for k in order:
        if k < curves.shape[1] and valid[k]:
            ax.plot(recall, curves[:, k], lw=1.2, label=classes[ids[k]] if ids[k] < len(classes) else str(ids[k]))
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title="precision-recall at IoU 0.5")
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def image_errors(pred: dict, true: dict, iou: float = 0.5, min_score: float = WORST_SCORE) -> tuple[int, int, int]:
    """(true positives, false positives, missed) of one image: detections scoring >= min_score matched greedily
    (highest score first) to unmatched true boxes of the same class at IoU >= iou."""
    import torchvision.ops as ops

    keep = pred["scores"] >= min_score
    pb, pl = pred["boxes"][keep], pred["labels"][keep]
    pb, pl = pb[pred["scores"][keep].argsort(descending=True)], pl[pred["scores"][keep].argsort(descending=True)]
    tb, tl = true["boxes"], true["labels"]
    if not len(pb) or not len(tb):
        return 0, len(pb), len(tb)
    m = ops.box_iou(pb.float(), tb.float())
    m[pl[:, None] != tl[None, :]] = 0
    used = torch.zeros(len(tb), dtype=torch.bool)
    tp = 0
    for i in range(len(pb)):
        row = m[i].clone()
        row[used] = 0
        j = int(row.argmax())
        if row[j] >= iou:
            used[j] = True
            tp += 1
    return tp, len(pb) - tp, len(tb) - tp


def write_files(metrics: dict, classes: list[str], out: Path, raw: dict | None, worst: list[tuple]) -> None:
    """metrics.json, per_class.csv, pr_curves.png and worst/ (the images with most errors, boxes drawn)."""
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=2))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["class", "boxes", "ap", "ap50", "recall"])
    w.writeheader()
    for row in metrics["per_class"]:
        w.writerow({k: ("" if row.get(k) is None else (round(row[k], 4) if isinstance(row[k], float) else row[k]))
                    for k in w.fieldnames})
    write_text_atomic(out / "per_class.csv", buf.getvalue())
    if raw is not None:
        pr_curves(raw, classes, out / "pr_curves.png")
    if worst:
        from imgcls.tasks.detect.draw import draw_boxes

        d = out / "worst"
        d.mkdir(exist_ok=True)
        for rank, (_errors, path, image, pred, true) in enumerate(worst, 1):
            keep = pred["scores"] >= WORST_SCORE
            drawn = draw_boxes(image, {k: v[keep] for k, v in pred.items()}, classes, truth=true)
            drawn.save(d / f"{rank:02d}_{Path(path).stem}.jpg", quality=90)
