"""Classification, one label per image: the loss, accuracy and validation numbers the loop always had."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from imgcls.evaluation.infer import predict_logits


def macro_f1(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> float:
    """Unweighted mean over the classes present (in target or predictions) of per-class F1."""
    k = num_classes
    counts = torch.bincount(target.cpu() * k + pred.cpu(), minlength=k * k).view(k, k).double()  # rows: truth
    tp = counts.diag()
    denom = counts.sum(0) + counts.sum(1)  # predicted + true per class = 2 tp + fp + fn
    present = denom > 0
    return float((2 * tp[present] / denom[present]).mean()) if present.any() else 0.0


class Classify:
    name = "classify"
    columns = ("val_loss", "val_acc", "val_f1")  # validation columns of results.csv
    monitors = {"val_acc": 1.0, "val_loss": -1.0, "val_f1": 1.0}  # with the sign that makes larger better

    def loss(self, out: torch.Tensor, y: torch.Tensor, *, weight=None, label_smoothing: float = 0.0) -> torch.Tensor:
        """Cross-entropy of logits (B, K) against labels (B,) or soft targets (B, K) (MixUp / CutMix)."""
        return F.cross_entropy(out, y, weight=weight, label_smoothing=label_smoothing)

    def hits(self, out: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, int]:
        """(correct predictions, images) of a training batch."""
        return (out.argmax(1) == (y.argmax(1) if y.ndim == 2 else y)).sum(), len(y)

    def validate(self, model, loader, *, device, amp_dtype, gather) -> dict[str, float]:
        """The epoch's validation numbers; `gather` concatenates a tensor over the processes."""
        logits, labels = predict_logits(model, loader, device=device, amp_dtype=amp_dtype)
        logits, labels = gather(logits), gather(labels)
        return {"val_loss": F.cross_entropy(logits, labels).item(),
                "val_acc": (logits.argmax(1) == labels).float().mean().item(),
                "val_f1": macro_f1(logits.argmax(1), labels, logits.shape[1])}


CLASSIFY = Classify()
