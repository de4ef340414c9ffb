"""PNG plots of evaluation results: a confusion matrix and learning curves.

Figures are built with `matplotlib.figure.Figure` directly rather than pyplot, so nothing touches
global state or needs a display backend, and plotting from several threads stays safe.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from imgcls.errors import ImgclsError

_DPI = 120
_MAX_ANNOTATED_CLASSES = 20  # beyond this the cell text is unreadable
_MAX_TICK_LABELS = 60  # beyond this tick labels overlap into a black smear
_CURVE_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc")


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write a figure as PNG, creating the parent folder (every imgcls plot goes through here)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=_DPI, bbox_inches="tight")
    return path


def plot_confusion_matrix(
    cm: np.ndarray | list[list[int]],
    classes: list[str],
    path: str | Path,
    *,
    normalize: bool = True,
    title: str = "Confusion matrix",
) -> Path:
    """Draw a confusion matrix as a PNG.

    Args:
        cm: (K, K) counts, rows are true classes and columns predicted ones.
        classes: the K class names.
        path: the PNG file to write; its parent directory is created.
        normalize: colour each row by its fraction of the row total (recall per class), which keeps
            rare classes visible; cell text always shows raw counts.
        title: figure title.

    Returns:
        The path written.

    Raises:
        ImgclsError: if `cm` is not square or does not match `classes`.
    """
    counts = np.asarray(cm)
    k = len(classes)
    if counts.ndim != 2 or counts.shape != (k, k):
        raise ImgclsError(f"confusion matrix must be {k}x{k} for {k} classes, got {counts.shape}")

    if normalize:
        row_sums = counts.sum(axis=1, keepdims=True)
        # A class absent from the split has an all-zero row; leave it at 0 instead of 0/0 = NaN.
        colours = np.divide(counts, row_sums, out=np.zeros(counts.shape), where=row_sums > 0)
        vmax = 1.0
    else:
        colours = counts.astype(float)
        vmax = max(float(colours.max()), 1.0)

    side = min(4.0 + 0.45 * k, 24.0)  # grow with K so labels fit, capped to keep files sane
    fig = Figure(figsize=(side + 1.5, side))  # extra width for the colour bar
    ax = fig.add_subplot()
    image = ax.imshow(colours, cmap="Blues", vmin=0.0, vmax=vmax, interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04,
                 label="fraction of true class" if normalize else "count")

    if k <= _MAX_TICK_LABELS:
        fontsize = 10 if k <= 20 else 7
        ax.set_xticks(range(k), labels=classes, rotation=45, ha="right", rotation_mode="anchor",
                      fontsize=fontsize)
        ax.set_yticks(range(k), labels=classes, fontsize=fontsize)
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    ax.set_xlabel("Predicted")
    ax.set_ylabel("True")
    ax.set_title(title)

    if k <= _MAX_ANNOTATED_CLASSES:
        # White text on dark cells, black on light ones, so counts stay legible.
        threshold = vmax / 2
        for i in range(k):
            for j in range(k):
                ax.text(j, i, str(int(counts[i, j])), ha="center", va="center", fontsize=8,
                        color="white" if colours[i, j] > threshold else "black")
    return save_figure(fig, path)


def _read_curves(results_csv: Path) -> dict[str, list[tuple[float, float]]]:
    """Read (epoch, value) pairs per column, skipping empty cells (no validation set)."""
    try:
        with results_csv.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            fields = reader.fieldnames or []
            # a task without accuracy (detection: val_map columns instead) needs the epoch and the losses
            required = ("epoch", "train_loss") if "val_map" in fields else _CURVE_COLUMNS
            missing = [c for c in required if c not in fields]
            if missing:
                raise ImgclsError(f"{results_csv} is missing columns: {', '.join(missing)}")
            rows = list(reader)
    except FileNotFoundError:
        raise ImgclsError(f"results file not found: {results_csv}") from None
    if not rows:
        raise ImgclsError(f"{results_csv} has no epochs to plot")

    extra = [c for c in fields if c.startswith("val_map")]
    curves: dict[str, list[tuple[float, float]]] = {c: [] for c in (*_CURVE_COLUMNS[1:], *extra) if c in fields}
    for line, row in enumerate(rows, start=2):
        try:
            epoch = float(row["epoch"])
            for column, points in curves.items():
                value = (row[column] or "").strip()
                if value:
                    points.append((epoch, float(value)))
        except ValueError as e:
            raise ImgclsError(f"{results_csv} line {line}: {e}") from None
    return curves


def plot_learning_curves(results_csv: str | Path, path: str | Path) -> Path:
    """Draw loss and accuracy against epoch, train and validation, as a two-panel PNG.

    Args:
        results_csv: a `results.csv` with columns epoch, seconds, train_loss, train_acc, val_loss,
            val_acc, lr; empty validation cells (training without a validation set) are skipped.
        path: the PNG file to write; its parent directory is created.

    Returns:
        The path written.

    Raises:
        ImgclsError: if the CSV is missing, lacks a column, has no rows or holds a non-number.
    """
    results_csv = Path(results_csv)
    curves = _read_curves(results_csv)

    fig = Figure(figsize=(11, 4.5))
    panels = fig.subplots(1, 2)
    boxes = "val_map" in curves  # detection: mAP and mAP50 in the second panel
    second = (("val_map", "val mAP@[.5:.95]"), ("val_map50", "val mAP50")) if boxes else \
        (("train_acc", "train"), ("val_acc", "val"))
    panels_columns = ((("train_loss", "train"), ("val_loss", "val")), second)
    for ax, columns, label in zip(panels, panels_columns, ("Loss", "mAP" if boxes else "Accuracy")):
        for column, name in columns:
            points = curves.get(column, [])
            if points:
                epochs, values = zip(*points)
                # Markers make a one-epoch run (a single point) visible.
                ax.plot(epochs, values, marker="o", markersize=3, label=name)
        ax.set_xlabel("Epoch")
        ax.set_ylabel(label)
        ax.set_title(label)
        ax.grid(True, alpha=0.3)
        if ax.has_data():
            ax.legend()
    fig.tight_layout()
    return save_figure(fig, path)


def plot_image_grid(images: list[np.ndarray], titles: list[str], path: str | Path, *, cols: int = 8,
                    title: str = "") -> Path:
    """A grid of images (H, W) or (H, W, C) uint8 with a caption each, as a PNG."""
    if not images:
        raise ImgclsError("no images to draw")
    cols = min(cols, len(images))
    rows = -(-len(images) // cols)
    fig = Figure(figsize=(1.9 * cols, 2.1 * rows))
    for i, (img, caption) in enumerate(zip(images, titles)):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(img.squeeze(-1) if img.ndim == 3 and img.shape[-1] == 1 else img,
                  cmap="gray" if img.ndim == 2 or img.shape[-1] == 1 else None, vmin=0, vmax=255)
        ax.set_title(caption, fontsize=7)
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)
