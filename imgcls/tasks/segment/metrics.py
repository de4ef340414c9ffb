"""Segmentation metrics from a pixel confusion matrix (torchmetrics accumulates it, the ignore index left out):
IoU and Dice per class, their means, pixel accuracy; and the files `evaluate` writes."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch


def confusion_meter(num_classes: int, ignore_index: int):
    """A torchmetrics confusion matrix over pixels (rows: truth), skipping `ignore_index`."""
    from torchmetrics.classification import MulticlassConfusionMatrix

    return MulticlassConfusionMatrix(num_classes=num_classes, ignore_index=ignore_index)


def scores(cm: np.ndarray | torch.Tensor, classes: list[str]) -> dict:
    """mIoU, mean Dice and pixel accuracy of a confusion matrix (K, K), and per class (null where a class is absent
    from both truth and prediction: its IoU is undefined and left out of the means)."""
    cm = np.asarray(cm, dtype=np.float64)
    tp, truth, pred = np.diag(cm), cm.sum(1), cm.sum(0)
    union = truth + pred - tp
    present = union > 0
    iou = np.where(present, tp / np.maximum(union, 1), np.nan)
    dice = np.where(present, 2 * tp / np.maximum(truth + pred, 1), np.nan)
    return {"miou": float(np.nanmean(iou)) if present.any() else 0.0,
            "mean_dice": float(np.nanmean(dice)) if present.any() else 0.0,
            "pixel_acc": float(tp.sum() / max(cm.sum(), 1)),
            "per_class": {c: {"iou": None if np.isnan(i) else float(i), "dice": None if np.isnan(d) else float(d),
                              "pixels": int(t)} for c, i, d, t in zip(classes, iou, dice, truth)},
            "confusion_matrix": cm.astype(np.int64).tolist()}


def write_files(metrics: dict, classes: list[str], out_dir: Path, title: str) -> None:
    """metrics.json, per_class.csv (IoU, Dice, pixels per class) and confusion_matrix.png (over pixels)."""
    from imgcls.evaluation.metrics import write_metrics
    from imgcls.evaluation.plots import plot_confusion_matrix

    out_dir.mkdir(parents=True, exist_ok=True)
    write_metrics(metrics, out_dir / "metrics.json")
    with open(out_dir / "per_class.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["class", "iou", "dice", "pixels"])
        for c, v in metrics["per_class"].items():
            w.writerow([c, "" if v["iou"] is None else f"{v['iou']:.6f}", "" if v["dice"] is None else f"{v['dice']:.6f}",
                        v["pixels"]])
    if len(classes) <= 60:  # a matrix of more classes is unreadable as a picture (the numbers are in metrics.json)
        plot_confusion_matrix(metrics["confusion_matrix"], classes, out_dir / "confusion_matrix.png", title=title)
