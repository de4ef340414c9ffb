"""Classification metrics from logits and labels, and their JSON / CSV files.

`compute_metrics` returns plain Python numbers only, so the dict goes straight into `json.dump` and
back out of `read_metrics` unchanged.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from imgcls.errors import ImgclsError

_REQUIRED_KEYS = ("top1", "classes")
_CSV_COLUMNS = ("class", "precision", "recall", "f1", "support")


def _to_numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        # bfloat16/half have no numpy equivalent (or lose precision in argsort ties); widen first.
        if x.is_floating_point():
            x = x.float()
        return x.numpy()
    return np.asarray(x)


def _topk_accuracy(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    # A stable sort of the negated scores breaks ties towards the lower index, like argmax does,
    # so top-1 here always agrees with the predictions used for the confusion matrix.
    topk = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return float((topk == labels[:, None]).any(axis=1).mean())


def _prf(labels: np.ndarray, preds: np.ndarray, num_classes: int, average: str | None) -> tuple:
    return precision_recall_fscore_support(
        labels, preds, labels=list(range(num_classes)), average=average, zero_division=0
    )


def compute_metrics(
    logits: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    classes: list[str],
    loss: float | None = None,
) -> dict:
    """Accuracy, precision/recall/F1 and the confusion matrix for a single-label classifier.

    Args:
        logits: (N, K) scores; any monotonic transform (logits, probabilities) gives the same result.
        labels: (N,) true class indices in `[0, K)`.
        classes: the K class names, in index order.
        loss: mean loss over the samples, stored as-is when given.

    Returns:
        A JSON-serialisable dict with `num_samples`, `top1`, `top5` (top-k with k = min(5, K)),
        `loss` (only when given), `classes`, `per_class` (name -> precision/recall/f1/support),
        `macro`, `micro`, `weighted` (precision/recall/f1) and `confusion_matrix` (rows are true
        classes, columns predicted ones, both in the order of `classes`).

    Raises:
        ImgclsError: if the shapes disagree with each other or with `classes`, there are no
            samples, or a label is outside `[0, K)`.
    """
    scores = _to_numpy(logits)
    targets = _to_numpy(labels)
    if scores.ndim != 2:
        raise ImgclsError(f"logits must have shape (N, K), got {tuple(scores.shape)}")
    if targets.ndim != 1 or targets.shape[0] != scores.shape[0]:
        raise ImgclsError(
            f"labels must have shape ({scores.shape[0]},) to match logits, got {tuple(targets.shape)}"
        )
    num_samples, num_classes = scores.shape
    if num_classes != len(classes):
        raise ImgclsError(f"logits have {num_classes} columns but there are {len(classes)} classes")
    if num_samples == 0:
        raise ImgclsError("cannot compute metrics on zero samples")
    targets = targets.astype(np.int64)
    if targets.min() < 0 or targets.max() >= num_classes:
        raise ImgclsError(
            f"labels must be in [0, {num_classes}), got range [{targets.min()}, {targets.max()}]"
        )

    preds = scores.argmax(axis=1)
    precision, recall, f1, support = _prf(targets, preds, num_classes, average=None)
    per_class = {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(classes)
    }
    averages = {}
    for average in ("macro", "micro", "weighted"):
        p, r, f, _ = _prf(targets, preds, num_classes, average=average)
        averages[average] = {"precision": float(p), "recall": float(r), "f1": float(f)}
    # labels=range(K) keeps a row and column for classes that never occur in this split.
    cm = confusion_matrix(targets, preds, labels=list(range(num_classes)))

    metrics: dict[str, Any] = {
        "num_samples": int(num_samples),
        "top1": _topk_accuracy(scores, targets, 1),
        "top5": _topk_accuracy(scores, targets, min(5, num_classes)),
    }
    if loss is not None:
        metrics["loss"] = float(loss)
    metrics["classes"] = [str(c) for c in classes]
    metrics["per_class"] = per_class
    metrics.update(averages)
    metrics["confusion_matrix"] = [[int(v) for v in row] for row in cm]
    return metrics


def write_metrics(metrics: dict, path: str | Path) -> Path:
    """Write metrics as indented JSON, creating the parent directory.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    return path


def read_metrics(path: str | Path) -> dict:
    """Read metrics written by `write_metrics`.

    Raises:
        ImgclsError: if the file is missing, is not valid JSON, or lacks `top1` / `classes`.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ImgclsError(f"metrics file not found: {path}") from None
    except OSError as e:
        raise ImgclsError(f"cannot read metrics file {path}: {e.strerror}") from None
    try:
        metrics = json.loads(text)
    except json.JSONDecodeError as e:
        raise ImgclsError(f"metrics file {path} is not valid JSON: {e}") from None
    if not isinstance(metrics, dict):
        raise ImgclsError(f"metrics file {path} must hold a JSON object")
    missing = [k for k in _REQUIRED_KEYS if k not in metrics]
    if missing:
        raise ImgclsError(f"metrics file {path} is missing keys: {', '.join(missing)}")
    return metrics


def per_class_rows(metrics: dict) -> list[dict]:
    """One row per class, in class order, with keys class, precision, recall, f1, support."""
    return [
        {"class": name, **{k: metrics["per_class"][name][k] for k in _CSV_COLUMNS[1:]}}
        for name in metrics["classes"]
    ]


def write_per_class_csv(metrics: dict, path: str | Path) -> Path:
    """Write the per-class table as CSV (conventionally `per_class.csv`), creating the parent dir.

    Args:
        metrics: a dict from `compute_metrics` or `read_metrics`.
        path: the CSV file to write.

    Returns:
        The path written.
    """
    return write_rows_csv(per_class_rows(metrics), path, list(_CSV_COLUMNS))


def most_confused(metrics: dict, k: int = 20) -> list[dict]:
    """The k largest off-diagonal cells of the confusion matrix: which class is taken for which, how often."""
    cm = np.asarray(metrics["confusion_matrix"])
    classes = metrics["classes"]
    totals = cm.sum(1)
    pairs = [(int(cm[t, p]), t, p) for t in range(len(classes)) for p in range(len(classes)) if t != p and cm[t, p] > 0]
    pairs.sort(key=lambda x: (-x[0], x[1], x[2]))
    return [{"true": classes[t], "predicted": classes[p], "count": n, "share_of_true": n / max(int(totals[t]), 1)}
            for n, t, p in pairs[:k]]


def write_rows_csv(rows: list[dict], path: str | Path, columns: list[str] | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = columns or (list(rows[0]) if rows else [])
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path
