"""Object detection, boxes and classes per image: lists of images and targets, the detector's own losses, COCO mAP.

Its parts: `formats` (YOLO txt, COCO JSON, Pascal VOC XML, CSV), `data` (data=detfolder: boxes through
torchvision v2 augmentation, the doctor's box checks), `metrics` (torchmetrics' MeanAveragePrecision on
pycocotools, PR curves, worst images) and `draw`; its models (Faster R-CNN, FCOS, RetinaNet on an FPN
backbone) are a family of the model registry (imgcls/models/detection.py). A detector computes its losses
itself from the targets (torchvision's detectors do: the loss needs the anchors and proposals it made), so
this task gives the loop `forward_loss` and its batches are lists (images of their own sizes).
"""

from __future__ import annotations

from pathlib import Path

import torch

import imgcls.tasks.detect.data  # noqa: F401 - registers data=detfolder
from imgcls.errors import ImgclsError
from imgcls.progress import progress_bar
from imgcls.tasks.detect.metrics import image_errors, map_meter, summarize, write_files

WORST_IMAGES = 12  # images drawn in worst/ by `imgcls evaluate`


def _cpu(d: dict) -> dict:
    return {k: v.detach().float().cpu() if k != "labels" else v.detach().cpu() for k, v in d.items()}


def detections(model, images: list[torch.Tensor], device) -> list[dict]:
    """The detector's boxes, scores and labels (on the CPU) of a list of images (3, H, W) in [0, 1]."""
    with torch.no_grad():
        return [_cpu(o) for o in model([x.to(device, non_blocking=True) for x in images])]


class Detect:
    name = "detect"
    columns = ("val_map", "val_map50", "val_recall")  # COCO mAP@[.5:.95], AP at IoU 0.5, mean recall (100 dets)
    monitors = {"val_map": 1.0, "val_map50": 1.0}
    train_accuracy = False  # the loop has no accuracy to count in a training batch of boxes

    def to_device(self, x: list[torch.Tensor], y: list[dict], device) -> tuple[list, list]:
        return ([i.to(device, non_blocking=True) for i in x],
                [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in y])

    def forward_loss(self, model, x, y, **_) -> tuple[dict, torch.Tensor]:
        """The detector's losses (classification, box regression; proposals' for two stages), summed."""
        losses = model(x, y)
        return losses, sum(losses.values())

    def hits(self, out, y):
        return None

    def loss(self, out, y, **_):
        raise ImgclsError("a detector computes its loss from the targets itself (Detect.forward_loss)")

    def run(self, model, loader, *, device, amp_dtype=None, desc: str | None = None, keep: int = 0,
            classes: list[str] | None = None):
        """(torchmetrics' result, the `keep` worst images as (errors, path, image, pred, truth)) over `loader`."""
        from imgcls.device import autocast

        model.eval()
        meter = map_meter(extended=True)
        worst, index, counts = [], 0, {}
        paths = getattr(loader.dataset, "images", None) if hasattr(loader, "dataset") else None
        for x, y in (progress_bar(loader, desc=desc, unit="batch") if desc else loader):
            with autocast(device, amp_dtype):
                preds = detections(model, x, device)
            truth = [{"boxes": t["boxes"].float().cpu(), "labels": t["labels"].cpu()} for t in y]
            meter.update(preds, truth)
            for t in truth:
                for c in t["labels"].tolist():
                    counts[c] = counts.get(c, 0) + 1
            if keep:
                for img, p, t in zip(x, preds, truth):
                    tp, fp, fn = image_errors(p, t)
                    worst.append((fp + fn, paths[index] if paths else str(index), img, p, t))
                    worst.sort(key=lambda w: -w[0])
                    del worst[keep:]
                    index += 1
            else:
                index += len(x)
        if not index:
            raise ImgclsError("no image to evaluate")
        r = meter.compute()
        r["_counts"] = counts
        return r, worst

    def validate(self, model, loader, *, device, amp_dtype, gather) -> dict[str, float]:
        """COCO mAP of the epoch over the whole val split: under torchrun each process detects in its block of
        images, and the boxes of every process are gathered (as rows of tensors) before COCO's evaluation."""
        from imgcls.device import autocast

        model.eval()
        pred_rows, true_rows, seen = [], [], []
        start = loader._block().start if hasattr(loader, "_block") else 0  # this process's first image in val
        i = start
        for x, y in loader:
            with autocast(device, amp_dtype):
                preds = detections(model, x, device)
            for p, t in zip(preds, y):
                pred_rows.append(torch.cat([torch.full((len(p["boxes"]), 1), float(i)), p["boxes"].double(),
                                            p["scores"].double()[:, None], p["labels"].double()[:, None]], 1))
                true_rows.append(torch.cat([torch.full((len(t["boxes"]), 1), float(i)), t["boxes"].double().cpu(),
                                            t["labels"].double().cpu()[:, None]], 1))
                seen.append(i)
                i += 1
        preds = gather(torch.cat(pred_rows) if pred_rows else torch.zeros(0, 7, dtype=torch.float64))
        truth = gather(torch.cat(true_rows) if true_rows else torch.zeros(0, 6, dtype=torch.float64))
        images = gather(torch.tensor(seen, dtype=torch.float64))
        meter = map_meter()
        for img in images.tolist():
            p, t = preds[preds[:, 0] == img], truth[truth[:, 0] == img]
            meter.update([{"boxes": p[:, 1:5].float(), "scores": p[:, 5].float(), "labels": p[:, 6].long()}],
                         [{"boxes": t[:, 1:5].float(), "labels": t[:, 5].long()}])
        if not len(images):
            raise ImgclsError("no image to validate on")
        r = meter.compute()
        return {"val_map": max(float(r["map"]), 0.0), "val_map50": max(float(r["map_50"]), 0.0),
                "val_recall": max(float(r["mar_100"]), 0.0)}

    def evaluate(self, model, bundle, split: str, out_dir: Path, *, device, batch_size: int = 8, amp_dtype=None,
                 workers: int = 2) -> dict:
        """COCO metrics of `model` on `bundle.<split>`: metrics.json, per_class.csv, pr_curves.png, worst/ in out_dir."""
        from imgcls.data.loaders import split_loader

        data, loader = split_loader(bundle, split, batch_size=batch_size, device=device, workers=workers)
        r, worst = self.run(model, loader, device=device, amp_dtype=amp_dtype, desc=f"evaluate {split}",
                            keep=WORST_IMAGES, classes=bundle.classes)
        s = summarize(r, bundle.classes)
        counts = r["_counts"]
        for row in s["per_class"]:
            row["boxes"] = counts.get(row["id"], 0)
        metrics = {"task": "detect", "split": split, "num_samples": len(data),
                   "num_boxes": int(sum(counts.values())), **s, "classes": bundle.classes,
                   "image_size": list(bundle.image_size)}
        write_files(metrics, bundle.classes, Path(out_dir), r, worst)
        return metrics

    def headline(self, metrics: dict, split: str) -> str:
        if metrics.get("map") is None:  # COCO's -1: no true box in the split
            return f"{split}: no true box to score (mAP undefined)"
        return f"{split} mAP@[.5:.95] {metrics['map']:.3f}, mAP50 {metrics['map_50']:.3f}"


DETECT = Detect()
