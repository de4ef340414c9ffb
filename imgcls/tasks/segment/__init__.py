"""Semantic segmentation, one class per pixel: masks as targets, cross-entropy + Dice, mIoU.

Its parts: `data` (image + mask folders, the class map, joint augmentation; registers data=segfolder)
and `metrics` (IoU from a pixel confusion matrix); its models (U-Net, DeepLabV3+, LR-ASPP) are a family
of the model registry (imgcls/models/segmentation.py, registered for this task). The loop, run folder,
budgets and model files are the shared ones.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

import imgcls.tasks.segment.data  # noqa: F401 - registers data=segfolder
from imgcls.device import autocast
from imgcls.errors import ImgclsError
from imgcls.progress import progress_bar
from imgcls.tasks.segment.metrics import confusion_meter, scores, write_files

IGNORE_INDEX = 255  # the default; a bundle says its own (DataBundle.ignore_index)


def dice_loss(logits: torch.Tensor, y: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """1 - the soft Dice coefficient averaged over the classes present in the batch, ignored pixels left out.

    Per class k: 2 sum(p_k over its pixels) / (sum(p_k over all pixels) + its pixel count), from the
    probability each pixel gives its true class (a gather and a scatter-add: no (B, K, H, W) one-hot,
    which costs as much as the network with a hundred classes).
    """
    k = logits.shape[1]
    probs = logits.float().softmax(1)  # (B, K, H, W)
    valid = y != ignore_index
    yv = y.clamp(0, k - 1)
    p_true = probs.gather(1, yv.unsqueeze(1)).squeeze(1)[valid]  # (n,) the true class's probability
    classes = yv[valid]
    inter = torch.zeros(k, device=probs.device, dtype=probs.dtype).index_add(0, classes, p_true)
    count = torch.bincount(classes, minlength=k).to(probs.dtype)
    psum = (probs * valid.unsqueeze(1)).sum((0, 2, 3))
    present = count > 0
    if not present.any():
        return logits.sum() * 0
    return 1 - (2 * inter[present] / (psum[present] + count[present]).clamp(min=1e-6)).mean()


class Segment:
    name = "segment"
    columns = ("val_loss", "val_acc", "val_miou")  # val_acc: pixel accuracy
    monitors = {"val_miou": 1.0, "val_acc": 1.0, "val_loss": -1.0}
    dice_weight = 0.5  # loss = cross-entropy + this x Dice (Dice keeps small classes from vanishing)
    ignore_index = IGNORE_INDEX

    def loss(self, out: torch.Tensor, y: torch.Tensor, *, weight=None, label_smoothing: float = 0.0) -> torch.Tensor:
        """Cross-entropy over pixels (B, K, H, W) vs (B, H, W), the ignore index skipped, plus the Dice loss."""
        ce = F.cross_entropy(out, y, weight=weight, ignore_index=self.ignore_index, label_smoothing=label_smoothing)
        return ce + self.dice_weight * dice_loss(out, y, self.ignore_index) if self.dice_weight else ce

    def hits(self, out: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(correct pixels, labelled pixels) of a training batch, as tensors on its device."""
        valid = y != self.ignore_index
        return ((out.argmax(1) == y) & valid).sum(), valid.sum()

    def confusion(self, model, loader, *, device, amp_dtype, num_classes: int | None = None, desc: str | None = None):
        """(pixel confusion matrix (K, K) on the CPU, mean loss per batch) of `model` over `loader`."""
        model.eval()
        meter, loss_sum, batches = None, 0.0, 0
        with torch.no_grad():
            for x, y in (progress_bar(loader, desc=desc, unit="batch") if desc else loader):
                with autocast(device, amp_dtype):
                    out = model(x.to(device, non_blocking=True))
                out, y = out.float().cpu(), y.cpu()
                meter = meter or confusion_meter(num_classes or out.shape[1], self.ignore_index)
                meter.update(out.argmax(1), y)
                loss_sum += float(self.loss(out, y))
                batches += 1
        if meter is None:
            raise ImgclsError("no batch to evaluate")
        return meter.compute(), loss_sum / max(batches, 1)

    def validate(self, model, loader, *, device, amp_dtype, gather) -> dict[str, float]:
        cm, loss = self.confusion(model, loader, device=device, amp_dtype=amp_dtype)
        cm = gather(cm.unsqueeze(0)).sum(0)  # over the processes (each saw its block of val); the loss is this process's
        s = scores(cm, [str(i) for i in range(len(cm))])
        return {"val_loss": loss, "val_acc": s["pixel_acc"], "val_miou": s["miou"]}

    def evaluate(self, model, bundle, split: str, out_dir: Path, *, device, batch_size: int = 8, amp_dtype=None,
                 workers: int = 2) -> dict:
        """Metrics of `model` on `bundle.<split>`: metrics.json, per_class.csv, confusion_matrix.png in out_dir."""
        from imgcls.data.loaders import split_loader

        data, loader = split_loader(bundle, split, batch_size=batch_size, device=device, workers=workers)
        cm, loss = self.confusion(model, loader, device=device, amp_dtype=amp_dtype, num_classes=len(bundle.classes),
                                  desc=f"evaluate {split}")
        metrics = {"task": "segment", "split": split, "num_samples": len(data), "loss": loss,
                   **scores(cm, bundle.classes), "classes": bundle.classes, "image_size": list(bundle.image_size)}
        write_files(metrics, bundle.classes, Path(out_dir), f"{bundle.name} {split}: mIoU {metrics['miou']:.2%}")
        return metrics

    def headline(self, metrics: dict, split: str) -> str:
        return f"{split} mIoU {metrics['miou']:.2%} (pixel accuracy {metrics['pixel_acc']:.2%})"


SEGMENT = Segment()
